"""A small training loop for the fine-grained stages, with per-step hooks.

The stages need things an epoch-level engine does not give: a separate optimizer for mask
scores, a mask projection after every step, and stopping mid-epoch when the ReLU count reaches
the budget. Data are in-memory uint8 splits (``relucut.data``), normalized per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from relucut.data.splits import DataSplits, Split
from relucut.errors import RelucutError
from relucut.train.checkpoint import atomic_torch_save, rng_state, set_rng_state


@dataclass
class Data:
    train: Split
    val: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True  # mirror augmentation (off for digits)
    crop_padding: int = 4

    @classmethod
    def from_splits(cls, splits: DataSplits, limit_train: int | None = None) -> Data:
        """The engine's splits (``relucut.data.load_dataset``) as this loop's data: the first
        ``limit_train`` training images, the validation split for evaluation, no mirroring of digits."""
        train = splits.train
        if limit_train is not None:
            train = train.subset(torch.arange(min(limit_train, len(train))))
        if len(splits.val) == 0:
            raise RelucutError("the fine-grained methods report held-out accuracy; use --val-fraction > 0")
        side = splits.input_size[-1]
        return cls(train, splits.val, splits.mean, splits.std, flip=splits.name != "digits",
                   crop_padding=max(1, side // 8))

    def normalize(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = images.to(device, torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return (x - mean) / std


def _augment(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        di = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        dj = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        rows = (di[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dj[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


def train_batches(data: Data, batch_size: int, gen: torch.Generator, device: torch.device
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(data.train), generator=gen)
    for start in range(0, len(order) - 1, batch_size):
        idx = order[start:start + batch_size]
        if idx.numel() < 2:  # batch norm needs two samples
            break
        x = _augment(data.train.images[idx].float(), data.crop_padding, data.flip, gen)
        x = data.normalize(x, device)
        yield x, data.train.labels[idx].to(device)


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, split: Split | None = None, batch_size: int = 512,
             logits_of: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy on ``split`` (default: validation)."""
    split = split or data.val
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(split), batch_size):
            x = data.normalize(split.images[start:start + batch_size], device)
            out = logits_of(model, x) if logits_of else model(x)
            correct += int((out.argmax(1).cpu() == split.labels[start:start + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(1, len(split))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Data, batches: int = 50, batch_size: int = 128, seed: int = 0) -> None:
    """Re-estimates batch-norm running statistics with the final weights (a cumulative average).

    Short CPU runs at a high learning rate leave the running averages behind the weights, and
    eval-mode accuracy then drops far below train-mode accuracy.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    device = next(model.parameters()).device
    try:
        for i, (x, _) in enumerate(train_batches(data, batch_size, torch.Generator().manual_seed(seed), device)):
            model(x)
            if i + 1 >= batches:
                break
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was)


def step_lr(base: float, epoch: int, milestones: list[int], factor: float = 0.1) -> float:
    return base * factor ** sum(epoch >= m for m in milestones)


@dataclass
class EpochHooks:
    on_epoch_start: Callable[[int], None] | None = None
    after_step: Callable[[], bool] | None = None  # returns True to stop training now
    on_epoch_end: Callable[[int], None] | None = None
    # the hooks' own state (e.g. SNL's L1 controller), checkpointed with the model
    state_dict: Callable[[], dict] | None = None
    load_state_dict: Callable[[dict], None] | None = None


def run_epochs(
    model: nn.Module,
    data: Data,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    milestones: list[int] | None = None,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    extra_optimizer: torch.optim.Optimizer | None = None,
    hooks: EpochHooks | None = None,
    seed: int = 0,
    label: str = "train",
    progress: bool = True,
    checkpoint: Path | None = None,
) -> int:
    """SGD (momentum 0.9) over the model's trainable weights; returns the epochs run.

    With ``checkpoint``, the model, optimizers, data order, global RNGs and the hooks' state are
    saved (atomically) after every epoch and when a hook stops training, and a rerun with the same
    arguments continues after the last finished epoch (after a kill), ending bit-identical to an
    uninterrupted run. The learning rate is a function of the epoch, so the epoch restores it.
    """
    hooks = hooks or EpochHooks()
    device = next(model.parameters()).device
    extra = {id(p) for g in (extra_optimizer.param_groups if extra_optimizer else []) for p in g["params"]}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in extra]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    gen = torch.Generator().manual_seed(seed)
    steps = (len(data.train) + batch_size - 1) // batch_size
    milestones = list(milestones or [])
    start = _resume(checkpoint, model, opt, extra_optimizer, gen, hooks)
    if start is not None and start[1]:
        return start[0]  # this stage finished before
    first = start[0] if start else 0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=epochs * steps, completed=first * steps)
        for epoch in range(first, epochs):
            for group in opt.param_groups:
                group["lr"] = step_lr(lr, epoch, milestones)
            if hooks.on_epoch_start:
                hooks.on_epoch_start(epoch)
            model.train()
            for x, y in train_batches(data, batch_size, gen, device):
                loss = loss_fn(x, y)
                opt.zero_grad(set_to_none=True)
                if extra_optimizer:
                    extra_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if extra_optimizer:
                    extra_optimizer.step()
                bar.advance(task)
                if hooks.after_step and hooks.after_step():
                    recalibrate_bn(model, data, seed=seed)
                    _save(checkpoint, model, opt, extra_optimizer, gen, hooks, epoch + 1, done=True)
                    return epoch + 1
            if hooks.on_epoch_end:
                hooks.on_epoch_end(epoch)
            _save(checkpoint, model, opt, extra_optimizer, gen, hooks, epoch + 1, done=False)
    recalibrate_bn(model, data, seed=seed)
    _save(checkpoint, model, opt, extra_optimizer, gen, hooks, epochs, done=True)
    return epochs


def _save(path: Path | None, model: nn.Module, opt, extra, gen: torch.Generator, hooks: EpochHooks,
          epoch: int, done: bool) -> None:
    if path is None:
        return
    state = {"epoch": epoch, "done": done, "model": model.state_dict(), "opt": opt.state_dict(),
             "extra": extra.state_dict() if extra else None, "gen": gen.get_state(), "rng": rng_state(),
             "hooks": hooks.state_dict() if hooks.state_dict else None}
    atomic_torch_save(state, path)


def _resume(path: Path | None, model: nn.Module, opt, extra, gen: torch.Generator, hooks: EpochHooks
            ) -> tuple[int, bool] | None:
    if path is None or not path.is_file():
        return None
    # on the CPU: generator and RNG states must be CPU tensors; the loads below move the rest
    state = torch.load(path, map_location="cpu")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    if extra is not None and state["extra"] is not None:
        extra.load_state_dict(state["extra"])
    gen.set_state(state["gen"])
    if state.get("rng") is not None:
        set_rng_state(state["rng"])
    if hooks.load_state_dict and state.get("hooks") is not None:
        hooks.load_state_dict(state["hooks"])
    return int(state["epoch"]), bool(state["done"])
