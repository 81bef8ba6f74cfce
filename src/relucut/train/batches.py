"""Batches straight from tensors in (device) memory, augmented in whole batches: no per-sample Python.

Random crop with padding gathers each image's window from a once-padded copy of the split at random
offsets; flips are a masked ``torch.where``. The same code runs on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from relucut.data.splits import Split


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Shuffling and augmentation randomness depends only on (seed, epoch): resumed runs replay it."""
    return torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + int(epoch))


class DeviceBatches:
    """A split resident on ``device`` that yields normalized float batches."""

    def __init__(
        self,
        split: Split,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        *,
        augment: str = "none",
        padding: int = 4,
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.crop = "crop" in augment and padding > 0
        self.flip = "flip" in augment
        self.padding = padding
        self.padded = F.pad(self.images, (padding,) * 4) if self.crop else None
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)  # (x / 255 - mean) / std == x * scale + shift
        self.shift = -mean_t / std_t
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _crop(self, index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = index.shape[0]
        _, c, h, w = self.images.shape
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (b,), generator=gen, device=self.device)
        dx = torch.randint(0, span, (b,), generator=gen, device=self.device)
        rows = dy[:, None] + torch.arange(h, device=self.device)
        cols = dx[:, None] + torch.arange(w, device=self.device)
        padded = self.padded[index]
        out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
        return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).mul_(self.scale).add_(self.shift)
        return x.contiguous(memory_format=self.memory_format)

    def batches(
        self,
        batch_size: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training (``train=True``): shuffled, augmented, this rank's share; a last batch of one
        image is skipped (batch norm cannot train on it). Otherwise: in order, plain."""
        n = len(self)
        if train:
            order = torch.randperm(n, generator=generator, device=self.device)[rank::world]
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, order.shape[0], batch_size):
            index = order[start : start + batch_size]
            if train and index.shape[0] < 2:
                break
            if train and self.crop:
                x = self._crop(index, generator)
            else:
                x = self.images[index]
            if train and self.flip:
                flip = torch.rand(index.shape[0], generator=generator, device=self.device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield self._to_float(x), self.labels[index]

    def num_batches(self, batch_size: int, train: bool = False, world: int = 1) -> int:
        share = -(-len(self) // world) if train else len(self)
        full, rest = divmod(share, batch_size)
        return full + (1 if rest >= (2 if train else 1) else 0)
