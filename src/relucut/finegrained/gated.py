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
from relucut.merge import shallow_replacement

GATE_SCHEDULES = ("linear", "cosine")


def shallow_twin(block: nn.Module) -> nn.Module:
    """A fresh conv-BN (``relucut.merge.shallow_replacement``) with a zoo BasicBlock's shapes."""
    try:
        return shallow_replacement(block)
    except TypeError:
        raise RelucutError(
            f"{type(block).__name__} is not a zoo two-conv BasicBlock; gated branching replaces those"
        ) from None


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
