"""Checkpoints: written atomically, holding everything a resumed run needs to replay bit for bit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relucut.errors import RelucutError
from relucut.rundir import atomic_torch_save as atomic_torch_save  # re-exported: callers import it from here

CHECKPOINT_FORMAT = "relucut.checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """torch.load returns tuples as tuples but be tolerant of lists (random.setstate needs tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a relucut checkpoint file (tensors and plain data only: ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise RelucutError(f"checkpoint '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe content
        raise RelucutError(f"cannot read checkpoint '{path}' ({exc.__class__.__name__}); it is corrupt or not relucut's") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise RelucutError(f"'{path}' is not a relucut checkpoint; pass a run directory or its best.pt / last.pt")
    return data


def find_checkpoint(path: str | Path) -> Path:
    """A run directory's best.pt (else last.pt), or the file itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        if (path / "recipe.json").is_file():
            raise RelucutError(f"'{path}' is an export (recipe.json), not a training run; pass the run directory "
                               "it was exported from")
        raise RelucutError(f"run directory '{path}' holds no best.pt or last.pt; train it first")
    if not path.exists():
        raise RelucutError(f"'{path}' does not exist; pass a run directory or a checkpoint file")
    return path
