"""TrainConfig: everything a training run needs, round-tripping through JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relucut.errors import RelucutError, refuse_unknown_fields
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, check_made_for
from relucut.train.distributed import DEVICE_HELP, is_device_name

SCHEDULES = ("step", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam")
AUGMENTS = ("crop+flip", "crop", "flip", "none")
SELECTS = ("best", "last")
# Fields that change how fast a run goes but not what it computes: a run may resume with others.
RUNTIME_FIELDS = ("device", "compile", "channels_last", "bf16", "tensorboard", "eval_batch_size",
                  "data_dir")  # a copy of the same data elsewhere is the same run
# Paths to checkpoints, compared by the content they name (``<field>_sha256``, set by ``resolved``),
# so a run folder moved or copied with its teacher resumes; runs recorded before that by the path.
PATH_FIELDS = ("teacher", "init")


# DeepReDuce trains 120 epochs with decays at 30/60/90; shorter runs decay at 50/75 %, measured
# better there (bench/results/finegrained_cifar10.md, 15 epochs, 2 seeds: 46.3 % val against 41.4 %
# at 25/50/75 % and 44.9 % with no decay)
DEEPREDUCE_EPOCHS = 120


_DIGESTS: dict[tuple[str, int, int], str] = {}


def checkpoint_digest(path: str | None) -> str | None:
    """sha256 of the checkpoint a run dir or file names (None when there is none yet): read once
    per file version, however many configs name it."""
    if path is None:
        return None
    from relucut.rundir import file_digest
    from relucut.train.checkpoint import find_checkpoint

    try:
        file = find_checkpoint(path)
        stat = file.stat()
    except (RelucutError, OSError):
        return None
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(file)
    return _DIGESTS[key]


def default_milestones(epochs: int, step_size: int | None = None) -> list[int]:
    """Step-schedule decays: every ``step_size`` epochs; else DeepReDuce's 30/60/90 of 120 (25/50/75 %)
    for runs of 120 epochs or more, and 50/75 % for shorter ones, which lose too much at lr 0.1
    when the first decay comes after a quarter of the run."""
    if step_size is not None:
        return list(range(step_size, epochs, step_size))
    fractions = (0.25, 0.5, 0.75) if epochs >= DEEPREDUCE_EPOCHS else (0.5, 0.75)
    return sorted({m for m in (round(epochs * f) for f in fractions) if 0 < m < epochs})


@dataclass
class TrainConfig:
    """A training recipe. Defaults are DeepReDuce's (SGD 0.1, momentum 0.9, wd 4e-4, batch 128,
    120 epochs with lr / 10 at 30/60/90 (runs shorter than 120 epochs: at 50/75 %), KD with T=4
    and weight 0.9 when a teacher is given)."""

    model: ModelSpec = field(default_factory=lambda: ModelSpec("resnet18"))  # a dict is read as ModelSpec.to_dict()
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_fraction: float = 0.1
    val_from: str = "random"  # or "tail": the last val_fraction of the training files
    plan: ReLUPlan | None = None  # a dict is read as ReLUPlan.to_dict()
    teacher: str | None = None  # a run dir or a checkpoint file
    init: str | None = None  # a run dir or checkpoint whose weights start the run where names and shapes match
    teacher_sha256: str | None = None  # the teacher's checkpoint by content (resolved() sets it)
    init_sha256: str | None = None  # init's checkpoint by content (resolved() sets it)
    epochs: int = 120
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"  # or "adam" (SNL's authors search with it; momentum and nesterov unused)
    momentum: float = 0.9
    weight_decay: float = 4e-4
    nesterov: bool = False
    schedule: str = "step"
    step_size: int | None = None  # step schedule: lr x gamma every N epochs; None: default_milestones
    gamma: float = 0.1
    milestones: list[int] | None = None  # explicit epochs for the step schedule
    kd_temperature: float = 4.0
    kd_weight: float = 0.9
    augment: str | None = None  # None: "crop" for digits (digits are not mirror-symmetric), else "crop+flip"
    crop_padding: int | None = None  # None: image side // 8 (4 at 32x32)
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    channels_last: bool | None = None  # None: on for CUDA
    bf16: bool | None = None  # None: bf16 autocast on CUDA
    limit_train: int | None = None  # train on the first N training images only (quick runs)
    eval_batch_size: int = 512
    tensorboard: bool = False
    select: str = "best"  # the weights a run ends with: "best" on validation, or the "last" epoch's
    bn_recalibrate: int = 0  # > 0: re-estimate batch-norm statistics on N batches before each validation

    def __post_init__(self) -> None:
        # typed fields; dicts (JSON, older callers) are converted once, here
        if isinstance(self.model, dict):
            self.model = ModelSpec.from_dict(dict(self.model))
        if isinstance(self.plan, dict):
            self.plan = ReLUPlan.from_dict(self.plan)

    # -- resolution --------------------------------------------------------------------------
    def resolved(self) -> TrainConfig:
        """A copy with dataset-dependent defaults filled in and values checked."""
        cfg = dataclasses.replace(self)
        cfg.dataset = cfg.dataset.lower()
        spec = self.spec()
        if cfg.augment is None:
            cfg.augment = "crop" if cfg.dataset == "digits" else "crop+flip"
        if cfg.crop_padding is None:
            cfg.crop_padding = max(1, spec.image_size // 8)
        if cfg.schedule == "step" and cfg.milestones is None:
            cfg.milestones = default_milestones(cfg.epochs, cfg.step_size)
        for name in PATH_FIELDS:
            setattr(cfg, f"{name}_sha256", checkpoint_digest(getattr(cfg, name)))
        cfg.check()
        return cfg

    def spec(self) -> ModelSpec:
        return self.model

    def check(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RelucutError(message)

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 2, f"batch_size must be >= 2 (batch norm needs two samples), got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer '{self.optimizer}'; use {' or '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, f"unknown schedule '{self.schedule}'; use one of {', '.join(SCHEDULES)}")
        need(self.augment in AUGMENTS, f"unknown augment '{self.augment}'; use one of {', '.join(AUGMENTS)}")
        need(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")
        need(0.0 <= self.kd_weight <= 1.0, f"kd_weight must be in [0, 1], got {self.kd_weight}")
        need(self.limit_train is None or self.limit_train >= 2, "limit_train must be >= 2")
        need(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        need(self.val_from in ("random", "tail"), f"val_from must be 'random' or 'tail', got '{self.val_from}'")
        need(is_device_name(self.device), f"unknown device '{self.device}'; {DEVICE_HELP}")
        need(self.select in SELECTS, f"select must be one of {', '.join(SELECTS)}, got '{self.select}'")
        need(self.bn_recalibrate >= 0, f"bn_recalibrate must be >= 0 batches, got {self.bn_recalibrate}")
        need(self.step_size is None or self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}")
        if self.plan is not None:
            check_made_for(self.plan, self.model)

    def digest(self) -> str:
        """A short hash of what the run computes (runtime fields excluded): names default run dirs."""
        data = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (runtime ones excluded) whose values differ: why a run dir cannot be resumed.
        ``other`` is the saved side: its teacher and init by content, or by path where it predates that."""
        return [k for k in self.to_dict() if k not in self.comparison_runtime(other.to_dict())
                and self.to_dict()[k] != other.to_dict().get(k)]

    @staticmethod
    def comparison_runtime(saved: dict[str, Any]) -> tuple[str, ...]:
        """The fields a run may change on a resume, given its saved config: the runtime fields, and
        the checkpoint paths where the saved config names their content (else their digests)."""
        by_content = all(saved.get(f"{name}_sha256") is not None or saved.get(name) is None for name in PATH_FIELDS)
        moved = PATH_FIELDS if by_content else tuple(f"{name}_sha256" for name in PATH_FIELDS)
        return (*RUNTIME_FIELDS, *moved)

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the model spec and the plan as their own dicts."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = self.model.to_dict()
        data["plan"] = self.plan.to_dict() if self.plan is not None else None
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        refuse_unknown_fields(cls, data, "training config")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RelucutError(f"corrupt training config JSON: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise RelucutError(f"training config '{path}' does not exist")
        return cls.from_json(path.read_text())
