"""CIFAR download for machines with internet: urllib + tarfile, no torchvision. Never used by tests."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from relucut.errors import RelucutError

SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def download_cifar(name: str, root: Path) -> Path:
    """Downloads and extracts ``name`` into ``root`` (checked by md5); returns the archive path."""
    if name not in SOURCES:
        raise RelucutError(f"relucut can download {', '.join(SOURCES)}, not '{name}'; fetch it by hand")
    url, md5 = SOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[1]
    if not archive.is_file():
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, archive)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise RelucutError(f"download of {url} failed ({exc}); check the connection or fetch it by hand") from None
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != md5:
        raise RelucutError(f"{archive} has md5 {digest}, expected {md5}; delete it and download again")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")
    return archive
