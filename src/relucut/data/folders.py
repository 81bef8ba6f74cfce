"""Image folders: Tiny-ImageNet's standard layout and any ImageFolder (one sub-folder per class)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from relucut.data.splits import Split
from relucut.errors import RelucutError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"}


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise RelucutError("image folders need Pillow; pip install pillow") from None
    return Image


def _images(paths: list[Path], size: int) -> torch.Tensor:
    Image = _pil()
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with warnings.catch_warnings():  # the size is checked here, in one line, not warned about
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(path)  # reads the header only: the size is known before decoding
            with opened as img:
                _check_pixels(path, img.size, Image.MAX_IMAGE_PIXELS)
                img = img.convert("RGB")
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(img, dtype=np.uint8)
        except RelucutError:
            raise
        except Image.DecompressionBombError:
            raise RelucutError(f"image {path} claims more pixels than Pillow will decode (a decompression "
                               "bomb?); remove or replace it") from None
        except Exception as exc:  # noqa: BLE001 - a broken file raises OSError, SyntaxError, ValueError, ...
            raise RelucutError(f"cannot read image {path} ({exc.__class__.__name__}: {exc}); "
                               "remove or replace it") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _check_pixels(path: Path, size: tuple[int, int], limit: int | None) -> None:
    """Refuses an image larger than Pillow's decompression-bomb limit before it is decoded."""
    if limit and size[0] * size[1] > limit:
        raise RelucutError(f"image {path} is {size[0]}x{size[1]} pixels, over the {limit:,}-pixel limit (a "
                           "decompression bomb?); remove or shrink it")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def read_image_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[Split, list[str]]:
    """One sub-folder per class, classes sorted by name (or in the given order)."""
    if not root.is_dir():
        raise RelucutError(f"image folder '{root}' does not exist; pass the right --data-dir")
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise RelucutError(f"'{root}' has no class sub-folders; ImageFolder wants ROOT/CLASS/IMAGE files")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _files(root / name)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise RelucutError(f"no images under '{root}' (looked for {', '.join(sorted(EXTENSIONS))})")
    return Split(_images(paths, size), torch.tensor(labels, dtype=torch.long)), classes


def imagefolder_classes(root: Path) -> list[str]:
    """The class names of an image folder (sorted sub-folder names), read without opening an image."""
    if not root.is_dir():
        raise RelucutError(f"image folder '{root}' does not exist; pass the right --data-dir")
    folder = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise RelucutError(f"'{folder}' has no class sub-folders; ImageFolder wants ROOT/CLASS/IMAGE files")
    return classes


def load_imagefolder(root: Path, size: int) -> tuple[Split, Split | None, list[str]]:
    """ROOT/train/CLASS/* (+ optional ROOT/test/CLASS/* or ROOT/val/CLASS/*), or ROOT/CLASS/* alone."""
    if not root.is_dir():
        raise RelucutError(f"image folder '{root}' does not exist; pass the right --data-dir")
    if (root / "train").is_dir():
        train, classes = read_image_folder(root / "train", size)
        for held in ("test", "val"):
            if (root / held).is_dir():
                test, _ = read_image_folder(root / held, size, classes)
                return train, test, classes
        return train, None, classes
    train, classes = read_image_folder(root, size)
    return train, None, classes


def load_tinyimagenet(root: Path) -> tuple[Split, Split | None, list[str]]:
    """train/WNID/images/*.JPEG and val/images/* labelled by val/val_annotations.txt (the test set here)."""
    base = root / "tiny-imagenet-200" if (root / "tiny-imagenet-200").is_dir() else root
    if not (base / "train").is_dir():
        raise RelucutError(
            f"no Tiny-ImageNet under '{root}' (expected tiny-imagenet-200/train/); pass the right --data-dir"
        )
    wnids_file = base / "wnids.txt"
    classes = (wnids_file.read_text().split() if wnids_file.is_file()
               else sorted(p.name for p in (base / "train").iterdir() if p.is_dir()))
    train, _ = read_image_folder(base / "train", 64, classes)
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        return train, None, classes
    index = {wnid: i for i, wnid in enumerate(classes)}
    paths, labels = [], []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise RelucutError(f"{annotations} names class '{parts[1]}', which train/ lacks; re-extract the dataset")
        paths.append(base / "val" / "images" / parts[0])
        labels.append(index[parts[1]])
    return train, Split(_images(paths, 64), torch.tensor(labels, dtype=torch.long)), classes
