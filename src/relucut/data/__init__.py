"""Datasets held in memory as uint8 NCHW tensors, with a seeded validation split.

``load_dataset(name, root)`` returns :class:`DataSplits` (train / val / test); the validation split is
carved from the training set with ``seed``, so model selection never sees the test set.
"""

from __future__ import annotations

from pathlib import Path

from relucut.data.splits import SPLITS, DataSplits, Split, carve, channel_stats, make_splits
from relucut.errors import RelucutError

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


__all__ = ["DATASETS", "DataSplits", "Split", "carve", "channel_stats", "load_dataset"]
