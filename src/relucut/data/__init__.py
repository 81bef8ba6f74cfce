"""Datasets held in memory as uint8 NCHW tensors, with a seeded validation split.

``load_dataset(name, root)`` returns :class:`DataSplits` (train / val / test); the validation split is
carved from the training set with ``seed``, so model selection never sees the test set.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from relucut.data.splits import SPLITS, DataSplits, Split, carve, channel_stats, make_splits
from relucut.errors import RelucutError
from relucut.presets import PRESETS, DatasetPreset

DATASETS = ("cifar10", "cifar100", "tinyimagenet", "imagefolder", "digits")


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
    val_from: str = "random",
) -> DataSplits | Split:
    """Loads ``name`` into memory; with ``split`` ("train", "val" or "test") returns only that split.

    ``root``: the folder holding the files (CIFAR: the batches folder, its parent, or the .tar.gz).
    ``download``: fetch CIFAR first if it is absent (needs internet). ``image_size``: the side that
    ``imagefolder`` images are resized to (default 32). ``val_from``: "random" (seeded) or "tail"
    (the last ``val_fraction`` of the training files, e.g. CIFAR-10's last 5,000 images).
    """
    name = name.lower()
    if name not in DATASETS:
        raise RelucutError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise RelucutError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    train, test, classes, num_classes = _read(name, root, download, image_size)
    splits = make_splits(name, num_classes, train, test, val_fraction, seed, classes, val_from)
    return splits if split is None else splits.split(split)


IMAGEFOLDER_SIZE = 32  # the side imagefolder images are resized to unless told otherwise


def dataset_preset(name: str, root: str | Path | None = None, image_size: int | None = None) -> DatasetPreset:
    """The input shape and class count a model for ``name`` needs: a preset's (``relucut.presets``),
    or, for ``imagefolder``, 3 x ``image_size``² (default 32) and one class per sub-folder of ``root``
    (read without opening an image)."""
    key = name.lower()
    if key != "imagefolder":
        if key not in PRESETS:
            raise RelucutError(f"unknown dataset '{name}'; choose one of: {', '.join([*PRESETS, 'imagefolder'])}")
        preset = PRESETS[key]
        if image_size is not None and image_size != preset.image_size:
            raise RelucutError(f"--image-size applies to imagefolder; {key} images are {preset.image_size}x"
                               f"{preset.image_size}, drop --image-size")
        return preset
    size = IMAGEFOLDER_SIZE if image_size is None else image_size
    if size < 1:
        raise RelucutError(f"--image-size must be >= 1 pixel, got {size}")
    from relucut.data.folders import imagefolder_classes

    classes = imagefolder_classes(_need_root(key, root))
    return DatasetPreset("imagefolder", 3, size, len(classes))


def check_available(name: str, root: str | Path | None = None, download: bool = False) -> None:
    """Refuses, as loading would, a dataset whose files are not where ``root`` says; reads no image.
    Lets a command fail before it writes anything, where loading comes later (e.g. in a search)."""
    key = name.lower()
    if key not in DATASETS:
        raise RelucutError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if key == "digits":
        if importlib.util.find_spec("sklearn") is None:  # found, not imported: that takes a second
            raise RelucutError("the digits dataset needs scikit-learn; pip install 'relucut[data]'")
        return
    path = _need_root(key, root)
    if key in ("cifar10", "cifar100"):
        from relucut.data.cifar import LAYOUTS, locate

        if download:
            return
        if not path.exists():
            raise RelucutError(f"dataset path '{path}' does not exist; pass the right --data-dir, or add --download")
        if locate(key, path) is None:
            folder, archive = LAYOUTS[key][0], LAYOUTS[key][1]
            raise RelucutError(f"no {key} files under '{path}' (expected '{folder}/' or '{archive}'); "
                               "pass the right --data-dir, or add --download on a machine with internet")
        return
    if not path.exists():
        raise RelucutError(f"dataset path '{path}' does not exist; pass the right --data-dir")
    if key == "imagefolder":
        from relucut.data.folders import imagefolder_classes

        imagefolder_classes(path)


def _need_root(name: str, root: str | Path | None) -> Path:
    if root is None:
        raise RelucutError(f"dataset '{name}' needs its files: pass --data-dir (root=...)")
    return Path(root).expanduser()


def _read(name: str, root, download: bool, image_size: int | None):
    if name == "digits":
        from relucut.data.digits import load_digits_splits

        train, test, classes = load_digits_splits()
        return train, test, classes, 10
    path = _need_root(name, root)
    if name in ("cifar10", "cifar100"):
        from relucut.data.cifar import load_cifar, locate

        if download and locate(name, path) is None:
            from relucut.data.download import download_cifar

            download_cifar(name, path)
        if not path.exists():
            raise RelucutError(
                f"dataset path '{path}' does not exist; pass the right --data-dir, or add --download"
            )
        train, test, classes = load_cifar(name, path)
        return train, test, classes, 10 if name == "cifar10" else 100
    if not path.exists():
        raise RelucutError(f"dataset path '{path}' does not exist; pass the right --data-dir")
    from relucut.data import folders

    if name == "tinyimagenet":
        train, test, classes = folders.load_tinyimagenet(path)
        return train, test, classes, 200
    train, test, classes = folders.load_imagefolder(path, image_size or 32)
    return train, test, classes, len(classes)


__all__ = ["DATASETS", "DataSplits", "Split", "carve", "channel_stats", "check_available", "dataset_preset", "load_dataset"]
