"""DDP under torchrun: ranks from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's value everywhere (e.g. its validation result, which drives model selection)."""
        if self.world > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current_ranks() -> Dist:
    """The ranks of the process group this process already belongs to (``init_distributed``, which
    every ``relucut.train.train`` call runs), else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device relucut runs on (whether that GPU exists is checked later)."""
    return DEVICE_NAME.fullmatch(str(name)) is not None


def resolve_device(name: str, ranks: Dist) -> torch.device:
    from relucut.errors import RelucutError

    if not is_device_name(name):
        raise RelucutError(f"unknown device '{name}'; {DEVICE_HELP}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RelucutError("device 'cuda' was asked for but no GPU is visible; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device
