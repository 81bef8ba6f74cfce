"""In-memory dataset splits: uint8 NCHW images and int64 labels, plus a seeded validation carve."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from relucut.errors import RelucutError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"images {tuple(self.images.shape)} and labels {tuple(self.labels.shape)} disagree")
        self.labels = self.labels.to(torch.long)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass
class DataSplits:
    """A dataset's train / val / test splits. ``test`` is None where the files hold no test set.

    ``mean``/``std`` are per-channel statistics of the images scaled to [0, 1], computed over the
    whole training set before the validation carve, so they depend only on the files.
    """

    name: str
    num_classes: int
    train: Split
    val: Split
    test: Split | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    # how val was carved ({"val_fraction", "seed", "val_from"}); None when built by hand
    carve: dict | None = None

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise RelucutError(f"unknown split '{name}'; use one of {', '.join(SPLITS)}")
        found = getattr(self, name)
        if found is None:
            raise RelucutError(f"dataset '{self.name}' has no {name} split in its files")
        return found


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1] (float64 sums, chunked)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


VAL_FROM = ("random", "tail")


def carve(split: Split, fraction: float, seed: int, source: str = "random") -> tuple[Split, Split]:
    """Splits off ``fraction`` of ``split``: returns (rest, carved).

    ``source`` "random": a seeded random subset; "tail": the last images in file order (CIFAR-10's
    last 5,000 for 0.1, a common fixed held-out set).
    """
    if not 0.0 <= fraction < 1.0:
        raise RelucutError(f"val_fraction must be in [0, 1), got {fraction}")
    if source not in VAL_FROM:
        raise RelucutError(f"unknown validation source '{source}'; use one of {', '.join(VAL_FROM)}")
    n = len(split)
    n_carved = round(n * fraction)
    if fraction > 0 and n_carved == 0:
        n_carved = 1
    if source == "tail":
        return split.subset(torch.arange(n - n_carved)), split.subset(torch.arange(n - n_carved, n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    carved, rest = order[:n_carved].sort().values, order[n_carved:].sort().values
    return split.subset(rest), split.subset(carved)


def make_splits(
    name: str, num_classes: int, train: Split, test: Split | None, val_fraction: float, seed: int,
    classes: list[str] | None = None, val_from: str = "random",
) -> DataSplits:
    mean, std = channel_stats(train.images)
    rest, val = carve(train, val_fraction, seed, val_from)
    how = {"val_fraction": val_fraction, "seed": seed, "val_from": val_from}
    return DataSplits(name, num_classes, rest, val, test, mean, std, list(classes or []), how)
