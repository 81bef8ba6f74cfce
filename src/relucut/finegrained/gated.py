"""Gated branching (shallow paper §4): a low-sensitivity block learns a shallow, ReLU-free twin.

``GatedBranch`` computes gamma * f_GB(x) + (1 - gamma) * f_MB(x) with f_MB the original block
(its ReLUs included) and f_GB a single conv-BN with the block's input and output shapes. gamma
rises from 0 to 1 until the first LR decay, then stays 1; at the end the main branch is removed
and the block is the conv-BN alone: one conv deep instead of two, and no ReLUs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from relucut.errors import RelucutError

GATE_SCHEDULES = ("linear", "cosine")


class ShallowBlock(nn.Sequential):
    """conv-BN with no activation: the linear stand-in for a two-conv residual block."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)


def shallow_twin(block: nn.Module) -> ShallowBlock:
    """A fresh ShallowBlock matching a BasicBlock-like module (conv1 ... conv2)."""
    conv1, conv2 = getattr(block, "conv1", None), getattr(block, "conv2", None)
    if not isinstance(conv1, nn.Conv2d) or not isinstance(conv2, nn.Conv2d):
        raise RelucutError(f"{type(block).__name__} is not a two-conv basic block; gated branching replaces those")
    return ShallowBlock(conv1.in_channels, conv2.out_channels, stride=conv1.stride[0], kernel=conv1.kernel_size[0])


class GatedBranch(nn.Module):
    def __init__(self, main: nn.Module, shallow: nn.Module):
        super().__init__()
        self.main = main
        self.shallow = shallow
        self.register_buffer("gamma", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.shallow(x) + (1 - self.gamma) * self.main(x)

    def extra_repr(self) -> str:
        return f"gamma={float(self.gamma):.3f}"


def gate_value(epoch: int, ramp_epochs: int, schedule: str = "linear") -> float:
    """gamma_g in epoch ``epoch`` (0-based): i / ramp for i = epoch + 1, 1 from the ramp's end on."""
    if schedule not in GATE_SCHEDULES:
        raise RelucutError(f"unknown gate schedule '{schedule}'; use linear or cosine")
    if ramp_epochs <= 0:
        return 1.0
    t = min(1.0, (epoch + 1) / ramp_epochs)
    return t if schedule == "linear" else 0.5 * (1 - math.cos(math.pi * t))


def install_gates(model: nn.Module, block_paths: list[str]) -> dict[str, GatedBranch]:
    gates = {}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for path in block_paths:
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        block = getattr(parent, attr)
        gate = GatedBranch(block, shallow_twin(block)).to(device)
        setattr(parent, attr, gate)
        gates[path] = gate
    return gates


def set_gates(gates: dict[str, GatedBranch], gamma: float) -> None:
    for gate in gates.values():
        gate.gamma.fill_(float(gamma))


def remove_main_branches(model: nn.Module, gates: dict[str, GatedBranch]) -> None:
    """Replaces each gate by its shallow branch: the main branch's parameters leave the model."""
    for path, gate in gates.items():
        if float(gate.gamma) != 1.0:
            raise RelucutError(f"gate '{path}' is at gamma={float(gate.gamma):.3f}; finish its ramp before removal")
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attr, gate.shallow)


def block_sensitivity(block_sites: dict[str, list[str]], layer_budget: dict[str, int],
                      sizes: dict[str, int]) -> dict[str, float]:
    """Block -> fraction of its ReLUs the budget keeps (the paper's ReLU sensitivity, footnote 1)."""
    return {
        block: sum(layer_budget[s] for s in names) / max(1, sum(sizes[s] for s in names))
        for block, names in block_sites.items()
    }
