"""CIFAR-10/100 from the standard "python version" files: a folder or the .tar.gz archive.

Only ``data`` and the label key are read, so batches without ``filenames`` load too. The files are
pickles, read by an unpickler that builds plain data only (numpy arrays, lists, dicts, str, bytes,
numbers): a file asking for any other global is "not a CIFAR batch file", and nothing in it runs.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from relucut.data.splits import Split
from relucut.errors import RelucutError

LAYOUTS = {
    # name: (folder, archive, train files, test file, label key, meta file, class-name key)
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", "batches.meta",
                b"label_names"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], "test", b"fine_labels", "meta",
                 b"fine_label_names"),
}


class NotCifar(Exception):
    """A pickle that asks for a global a CIFAR batch never holds."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals numpy arrays pickle through (numpy 1 names, as the CIFAR files were written, and 2)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


class _PlainUnpickler(pickle.Unpickler):
    """Builds numpy arrays, lists, dicts, str, bytes and numbers; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3 at protocol 2
            import codecs

            return codecs.encode
        found = _numpy_globals().get((module, name))
        if found is None:
            raise NotCifar(f"{module}.{name}")
        return found


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        data = _PlainUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except NotCifar as exc:
        raise RelucutError(f"{where} is not a CIFAR batch file (it asks for {exc}, which CIFAR files never "
                           "hold); nothing in it was run; re-download the dataset") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise RelucutError(f"corrupt CIFAR file {where} ({exc.__class__.__name__}); re-download the dataset") from None
    if not isinstance(data, dict):
        raise RelucutError(f"corrupt CIFAR file {where} (not a dict of arrays); re-download the dataset")
    return {k.encode() if isinstance(k, str) else k: v for k, v in data.items()}


def _to_split(batches: list[tuple[dict, str]], label_key: bytes, num_classes: int) -> Split:
    images, labels = [], []
    for batch, where in batches:
        if b"data" not in batch or label_key not in batch:
            raise RelucutError(
                f"corrupt CIFAR file {where} (no 'data' or '{label_key.decode()}' key); re-download the dataset"
            )
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels_of = np.asarray(batch[label_key], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise RelucutError(f"corrupt CIFAR file {where} (data or labels are not numbers); "
                               "re-download the dataset") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels_of.shape != (data.shape[0],):
            raise RelucutError(f"corrupt CIFAR file {where} (data has shape {data.shape}, labels "
                               f"{labels_of.shape}); re-download the dataset")
        if labels_of.size and (labels_of.min() < 0 or labels_of.max() >= num_classes):
            raise RelucutError(f"corrupt CIFAR file {where} (labels outside 0..{num_classes - 1}); "
                               "re-download the dataset")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(labels_of)
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


class _Folder:
    def __init__(self, path: Path):
        self.path = path

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def where(self, name: str) -> str:
        return str(self.path / name)


class _Archive:
    def __init__(self, path: Path, folder: str):
        self.path, self.folder = path, folder
        try:
            with tarfile.open(path, "r:*") as tar:
                self.members = {m.name: m for m in tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise RelucutError(f"corrupt archive {path} ({exc}); delete it and download again") from None

    def _member(self, name: str) -> str | None:
        for full in (f"{self.folder}/{name}", f"./{self.folder}/{name}", name):
            if full in self.members:
                return full
        return None

    def has(self, name: str) -> bool:
        return self._member(name) is not None

    def read(self, name: str) -> bytes:
        try:
            with tarfile.open(self.path, "r:*") as tar:
                f = tar.extractfile(self.members[self._member(name)])
                return f.read() if f else b""
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
            raise RelucutError(f"corrupt archive {self.path} ({exc}); delete it and download again") from None

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"


def locate(name: str, root: Path) -> _Folder | _Archive | None:
    """Finds the dataset under ``root``: the folder itself, its named sub-folder, or the archive."""
    folder, archive, train_files, *_ = LAYOUTS[name]
    if root.is_file():
        return _Archive(root, folder)
    for candidate in (root, root / folder):
        if (candidate / train_files[0]).is_file():
            return _Folder(candidate)
    if (root / archive).is_file():
        return _Archive(root / archive, folder)
    return None


def load_cifar(name: str, root: Path) -> tuple[Split, Split | None, list[str]]:
    """Returns (train, test or None when the files hold no test batch, class names)."""
    folder, archive, train_files, test_file, label_key, meta_file, names_key = LAYOUTS[name]
    source = locate(name, root)
    if source is None:
        raise RelucutError(
            f"no {name} files under '{root}' (expected '{folder}/' or '{archive}'); "
            "pass the right --data-dir, or add --download on a machine with internet"
        )
    missing = [f for f in train_files if not source.has(f)]
    if missing:
        raise RelucutError(f"{name} at '{root}' lacks {', '.join(missing)}; re-download the dataset")
    num_classes = 10 if name == "cifar10" else 100
    train = _to_split([(_unpickle(source.read(f), source.where(f)), source.where(f)) for f in train_files],
                      label_key, num_classes)
    test = None
    if source.has(test_file):
        test = _to_split([(_unpickle(source.read(test_file), source.where(test_file)), source.where(test_file))],
                         label_key, num_classes)
    classes: list[str] = []
    if source.has(meta_file):  # class names are a nicety, but a damaged file is still refused
        classes = _class_names(_unpickle(source.read(meta_file), source.where(meta_file)), names_key,
                               source.where(meta_file))
    return train, test, classes


def _class_names(meta: dict, names_key: bytes, where: str) -> list[str]:
    names = meta.get(names_key, [])
    if not isinstance(names, list) or not all(isinstance(c, (bytes, str)) for c in names):
        raise RelucutError(f"corrupt CIFAR file {where} ('{names_key.decode()}' is not a list of names); "
                           "re-download the dataset, or delete that file (class names are optional)")
    return [c.decode(errors="replace") if isinstance(c, bytes) else c for c in names]
