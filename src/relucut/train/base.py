"""The base recipe a method derives every training run from, for one model and one data split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from relucut.data.splits import DataSplits
from relucut.models.registry import ModelSpec
from relucut.rundir import file_digest
from relucut.train.checkpoint import find_checkpoint
from relucut.train.config import TrainConfig


def base_config(spec: ModelSpec, data: DataSplits, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (or the engine's defaults) for ``spec`` on ``data``'s dataset and split (its
    validation carve and seed), with no plan and no teacher, resolved and checked."""
    base = base or TrainConfig()
    carve = data.carve or {}
    return dataclasses.replace(
        base, model=spec, dataset=data.name, plan=None, teacher=None,
        val_fraction=carve.get("val_fraction", base.val_fraction), val_from=carve.get("val_from", base.val_from),
        seed=carve.get("seed", base.seed),
    ).resolved()


def teacher_record(teacher: str | Path | None) -> dict[str, str] | None:
    """A teacher (run dir or checkpoint) in run settings: by the digest of its checkpoint, so a
    folder that moves with its teacher, or a copy of the teacher, still matches; the path is
    recorded for reading and compared as a runtime field (``teacher.path``)."""
    if teacher is None:
        return None
    return {"path": str(teacher), "sha256": file_digest(find_checkpoint(teacher))}


__all__ = ["base_config", "teacher_record"]
