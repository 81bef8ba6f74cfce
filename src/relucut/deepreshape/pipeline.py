"""DeepReShape end to end: per budget, the HybReNet design and the plain-ResNet18 design, each trained.

The design step is :func:`relucut.deepreshape.capacity.design_for_budget` (pure); this module only
trains the chosen designs with :func:`relucut.train.train` and collects ReLUs, MACs and accuracy.
A run dir per design (``<out>/<budget>_<role>``) makes the whole pipeline resume after a kill:
finished designs are read back from their final.json, unfinished ones resume from last.pt.
``<out>/deepreshape.json`` holds the settings (a rerun must match them) and ``<out>/result.json``
the rows, accuracy as fractions (``val_acc``, ``test_acc``; see docs/design.md "Results vocabulary").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relucut.deepreshape.capacity import BudgetDesign, design_for_budget
from relucut.errors import RelucutError
from relucut.models.hybrenet import parse_hrn_name
from relucut.rundir import atomic_write_json, claim

BASELINE = "hrn_2x2x2x"  # the plain ResNet18 shape
RESULTS_FILE = "result.json"
SETTINGS_FILE = "deepreshape.json"
SETTINGS_FORMAT = "relucut.deepreshape"


@dataclasses.dataclass
class PipelineSettings:
    model: str  # the ReLU-equalized HybReNet, e.g. hrn_5x5x3x
    budgets: list[int]
    order: list[int]  # 0-based stages, most -> least critical
    blocks: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 2, 2])
    min_width: int = 16
    baseline: str = BASELINE
    input_size: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    # low budgets: the design's network with SNL pixel masks to exactly the budget, not culled/thinned
    fine_grained: bool = False

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def designs(settings: PipelineSettings) -> list[dict[str, BudgetDesign]]:
    """Per budget: {"hybrenet": design, "baseline": design} (the baseline keeps its own ratios throughout)."""
    equalized = parse_hrn_name(settings.model)
    base = parse_hrn_name(settings.baseline)
    common = dict(blocks=tuple(settings.blocks), input_size=tuple(settings.input_size),
                  num_classes=settings.num_classes, min_width=settings.min_width)
    return [
        {
            "hybrenet": design_for_budget(b, equalized, settings.order, **common),
            "baseline": design_for_budget(b, base, settings.order, low_budget_ratios=base, **common),
        }
        for b in settings.budgets
    ]


def train_designs(
    settings: PipelineSettings,
    train_config: Any,  # relucut.train.TrainConfig with the training recipe; model/plan are set per design
    out: str | Path,
    data: Any = None,  # relucut.data DataSplits, loaded once for all designs
    progress: bool = True,
) -> list[dict[str, Any]]:
    out = Path(out)
    with claim(out, _settings_record(settings, train_config), file=SETTINGS_FILE, runtime=_runtime_keys()):
        rows: list[dict[str, Any]] = []
        for per_budget in designs(settings):
            for role, design in per_budget.items():
                rows.append({"role": role, **_train_design(settings, design, role, train_config, out, data,
                                                           progress)})
                atomic_write_json(out / RESULTS_FILE, rows)
    return rows


def _settings_record(settings: PipelineSettings, train_config: Any) -> dict[str, Any]:
    return {"format": SETTINGS_FORMAT, "version": 1, "settings": settings.to_dict(), "train": train_config.to_dict()}


def _runtime_keys() -> tuple[str, ...]:
    """The training recipe's runtime fields (device, compile, ...) may change on a rerun."""
    from relucut.train.config import RUNTIME_FIELDS

    return tuple(f"train.{k}" for k in RUNTIME_FIELDS)


def _train_design(settings: PipelineSettings, design: BudgetDesign, role: str, train_config: Any, out: Path,
                  data: Any, progress: bool) -> dict[str, Any]:
    """One design trained (or read back when finished): its description and accuracy."""
    from relucut.train import read_final, train

    if settings.fine_grained and design.regime == "cull":
        return _train_snl(settings, design, role, train_config, out, data, progress)
    run_dir = out / f"{design.budget}_{role}"
    cfg = design_config(design, train_config, settings.num_classes, settings.input_size)
    final = None
    if (run_dir / "final.json").is_file():
        _check_same_run(run_dir, cfg)
        final = read_final(run_dir)  # None when cut short: the run resumes
    if final is None:
        final = train(cfg, run_dir, data=data, progress=progress)
    return {**design.to_dict(), **_accuracy(final)}


def _train_snl(settings: PipelineSettings, design: BudgetDesign, role: str, train_config: Any, out: Path,
               data: Any, progress: bool) -> dict[str, Any]:
    """A low-budget design reached with fine-grained masks instead of culling/thinning.

    The design's network keeps all its ReLUs, is trained for ``epochs`` as SNL's all-ReLU base,
    then SNL (``relucut snl``, its own learning rates) masks it down to exactly the budget and
    fine-tunes it with KD for ``epochs``. Accuracy is the exported network's on the test split, as
    the coarse rows report; ``val_acc`` is SNL's held-out accuracy. Resumes like ``relucut snl``.
    """
    from relucut.cost import count
    from relucut.deepreshape.describe import distribution
    from relucut.export import load_export
    from relucut.finegrained.pipeline import run_snl
    from relucut.finegrained.snl import SNLConfig
    from relucut.train import evaluate, load_data

    spec = design.spec(settings.num_classes, settings.input_size)
    splits = data if data is not None else load_data(dataclasses.replace(train_config, model=spec))
    epochs = train_config.epochs
    cfg = SNLConfig(budget=design.budget, granularity="pixel", search_epochs=epochs, finetune_epochs=epochs)
    run_dir = out / f"{design.budget}_{role}_snl"
    finished = run_dir / "result.json"
    first_seconds = json.loads(finished.read_text())["seconds"] if finished.is_file() else None
    # a finished run resumes from its last checkpoints at once (and refuses other settings)
    base = dataclasses.replace(train_config, model=spec, plan=None, teacher=None)
    result = run_snl(spec, splits, run_dir, cfg, base=base, progress=progress)
    exported = load_export(run_dir / "export")
    report = count(exported, spec.input_size)
    test_acc = evaluate(exported, splits, split="test")["acc"] if splits.test is not None else None
    return {**design.to_dict(), "method": "snl-pixel", "culled": [], "thinned": [], "relus": report.relus,
            "macs": report.macs, "distribution": distribution(report.relus_by_stage), "test_acc": test_acc,
            "val_acc": result["result"]["val_acc"], "best_epoch": None, "epochs": epochs,
            "seconds": result["seconds"] if first_seconds is None else first_seconds}


def _check_same_run(run_dir: Path, cfg: Any) -> None:
    """A finished run dir is reused only for the very design and recipe it was trained with."""
    from relucut.train import TrainConfig

    differs = cfg.resolved().differences(TrainConfig.load(run_dir / "config.json"))
    if differs:
        raise RelucutError(
            f"'{run_dir}' holds a finished run with different {', '.join(differs)}; pass a new --out"
        )


def _accuracy(final: dict[str, Any]) -> dict[str, Any]:
    """A run's final.json in the summary's vocabulary: ``val_acc`` is the selected (best) epoch's."""
    return {"val_acc": final.get("best_val_acc"), "test_acc": final.get("test_acc"),
            **{k: final.get(k) for k in ("best_epoch", "epochs", "seconds")}}


def summary_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table cells: budget, role, design, ReLUs, MACs, accuracy in percent (test, else validation)."""
    out = []
    for r in rows:
        edits = "+".join(s for s in r["culled"] if s != "stem")
        edits = (f"cull {edits}" if edits else "") + (f" thin {'+'.join(r['thinned'])}" if r["thinned"] else "")
        edits = " ".join(part for part in (edits.strip(), r.get("method", "")) if part)
        acc = r.get("test_acc") if r.get("test_acc") is not None else r.get("val_acc")
        out.append([f"{r['budget']:,}", r["role"], f"{r['model']} m={r['base_width']} {edits}".strip(),
                    f"{r['relus']:,}", f"{r['macs'] / 1e6:.1f}M", "-" if acc is None else f"{100 * acc:.2f}"])
    return out


@dataclasses.dataclass
class DeepReShapeConfig:
    """``relucut.reduce`` with DeepReShape: the HybReNet design for ``budget`` (the equalized
    network widened, or culled/thinned below its capacity floor), trained with KD from the teacher."""

    budget: int
    equalized: str = "hrn_5x5x3x"  # the ReLU-equalized HybReNet (the slides' CIFAR-100 order)
    order: list[str] = dataclasses.field(default_factory=lambda: ["s3", "s2", "s4", "s1"])  # most -> least critical
    min_width: int = 16  # capacity floor of the first stage's width

    def check(self) -> None:
        parse_hrn_name(self.equalized)
        if self.budget < 1 or self.min_width < 1:
            raise RelucutError(f"budget and min_width must be >= 1, got {self.budget} and {self.min_width}")

    def design(self, num_classes: int, input_size: tuple[int, int, int]) -> BudgetDesign:
        stages = [f"s{i + 1}" for i in range(4)]
        if sorted(self.order) != stages:
            raise RelucutError(f"order must rank {', '.join(stages)} once each, got {', '.join(self.order)}")
        return design_for_budget(self.budget, parse_hrn_name(self.equalized), [stages.index(s) for s in self.order],
                                 input_size=input_size, num_classes=num_classes, min_width=self.min_width)


def design_job(spec: Any, cfg: DeepReShapeConfig, base: Any, teacher: str | Path | None, run_dir: Path):
    """(the design, its engine TrainJob): ``spec``'s classes and input, ``base``'s recipe, KD from
    ``teacher`` where given."""
    from relucut.deepreduce.executors import TrainJob

    cfg.check()
    design = cfg.design(spec.num_classes, spec.input_size)
    train_cfg = design_config(design, base, spec.num_classes, spec.input_size,
                              teacher=str(Path(teacher).resolve()) if teacher is not None else None)
    return design, TrainJob(f"deepreshape {cfg.budget}", train_cfg, run_dir)


def design_config(design: BudgetDesign, base: Any, num_classes: int, input_size: tuple[int, int, int],
                  **changes: Any) -> Any:
    """``base`` (a TrainConfig) for the design's network and its plan (none when it culls nothing)."""
    plan = design.plan(num_classes, input_size)
    return dataclasses.replace(base, model=design.spec(num_classes, input_size),
                               plan=plan if plan.decisions else None, **changes)


def design_label(design: BudgetDesign) -> str:
    """``hrn_5x5x3x m=16 cull s1 thin s2``: the network and its coarse edits."""
    culled = [c for c in design.culled if c != "stem"]
    edits = (f" cull {'+'.join(culled)}" if culled else "") + (f" thin {'+'.join(design.thinned)}" if design.thinned else "")
    return f"{design.model} m={design.base_width}{edits}"


def run_deepreshape(spec: Any, base: Any, out: str | Path, cfg: DeepReShapeConfig, *, teacher: str | Path | None = None,
                    data: Any = None, progress: bool = True) -> dict[str, Any]:
    """The design trained in ``out/train`` and exported to ``out/export``; returns (and writes) result.json."""
    from relucut.cost import count
    from relucut.export import export_run
    from relucut.train import train

    out = Path(out)
    design, job = design_job(spec, cfg, base, teacher, out / "train")
    final = train(job.config, job.run_dir, data=data, progress=progress, label="deepreshape design")
    exported = export_run(job.run_dir, out / "export")
    report = count(exported.model, exported.recipe.model.input_size)
    result = {"method": "deepreshape", "budget": cfg.budget, "network": design_label(design), "design": design.to_dict(),
              "result": {"relus": report.relus, "val_acc": final.get("best_val_acc"), "test_acc": final.get("test_acc"),
                         "macs": report.macs, "conv_depth": report.conv_depth}}
    atomic_write_json(out / RESULTS_FILE, result)
    return result
