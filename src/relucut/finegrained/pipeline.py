"""End-to-end runs (used by the CLI, ``relucut.reduce`` and the benchmarks): base model, method,
evaluation, export.

A fine-grained method is a ``body`` run by ``run_in_folder`` (settings claimed, the all-ReLU start
point, result.json with the baseline): ``run_snl``, ``run_senet``, and a registered method's own
(``relucut.methods.relupruner``), which needs no change here.

An output folder holds ``config.json`` (the resolved settings), ``base/`` (the all-ReLU model the
method starts from and distills from, a ``relucut train`` run; absent when a teacher is given),
one engine run directory per stage (``search/`` + ``finetune/`` for SNL, ``masks/`` +
``finetune/`` for SENet), ``export/`` (and ``export_ac/`` for an AC exit), and ``result.json``.
Rerunning the same command after a kill resumes the stage that was running, from its last epoch,
and ends as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import fx, nn

from relucut.cost import count
from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.export import export_intact
from relucut.finegrained.artifact import export
from relucut.structure import AuxExit, check_aux_model
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.senet import senet
from relucut.finegrained.snl import snl
from relucut.models.registry import ModelSpec
from relucut.rundir import RunDir, atomic_write_json, read_settings
from relucut.sites import addressable, find_sites
from relucut.train.base import base_config, teacher_record
from relucut.train.build import load_checkpoint_model
from relucut.train.distributed import init_distributed
from relucut.train.config import RUNTIME_FIELDS, TrainConfig
from relucut.train.evaluate import evaluate
from relucut.train.loop import train


def base_model(base: TrainConfig, data: DataSplits, out: Path, teacher: nn.Module | str | Path | None,
               progress: bool = True) -> nn.Module:
    """The all-ReLU model the method starts from: ``teacher`` (a module, run dir or checkpoint), or
    one trained now by the engine into ``out/base`` with ``base``'s recipe (resumed if present)."""
    if isinstance(teacher, nn.Module):
        return teacher
    if teacher is None:
        train(base, out / "base", data=data, progress=progress, label="all-ReLU base")
        teacher = out / "base"
    model = load_checkpoint_model(teacher)
    if model.relucut_config.dataset != data.name:
        raise RelucutError(f"teacher '{teacher}' was trained on {model.relucut_config.dataset}, not {data.name}; "
                           "pass a teacher trained on this dataset")
    return model


def start_model(teacher_model: nn.Module) -> nn.Module:
    """The model a method trains: a copy of the all-ReLU one, sitified where a module swap cannot
    reach every ReLU site (functional ReLUs, a module called twice: users' networks) so that each
    site takes a learnable mask; the export applies its plan in the same form (``apply_plan``)."""
    model = addressable(teacher_model)
    return (copy.deepcopy(model) if model is teacher_model else model).train()


def check_shallow_model(model: nn.Module, name: str) -> None:
    """Gated branching replaces relucut's zoo BasicBlocks; a model without one would train SENet's
    own network under the shallow name, so it is refused in one line."""
    from relucut.models.resnet import BasicBlock

    if not any(isinstance(m, BasicBlock) for m in model.modules()):
        traced = " (its forward is traced: functional ReLUs or a ReLU module called twice)" \
            if isinstance(model, fx.GraphModule) else ""
        raise RelucutError(f"--shallow replaces relucut's zoo BasicBlocks (relucut.models.resnet.BasicBlock, "
                           f"as in resnet18), and {name} has none{traced}; run senet without --shallow "
                           "(relucut frontier: drop senet-shallow from --methods)")


def accuracy(model: nn.Module, data: DataSplits) -> dict[str, float | None]:
    val = evaluate(model, data, split="val")["acc"] if len(data.val) else None
    test = evaluate(model, data, split="test")["acc"] if data.test is not None and len(data.test) else None
    return {"val_acc": val, "test_acc": test}


def result_columns(cost: dict[str, Any], base: dict[str, Any], accuracy: dict[str, float | None]) -> dict[str, Any]:
    return {
        "relus": cost["relus"], "relus_without_stem": cost.get("relus_without_stem"), **accuracy,
        "conv_depth": cost["conv_depth"], "macs": cost["macs"],
        "mac_saving": base["macs"] / max(1, cost["macs"]), "relu_reduction": base["relus"] / max(1, cost["relus"]),
    }


def _base_cost(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    r = count(model, spec.input_size)
    return {"relus": r.relus, "relus_without_stem": r.relus_without_stem, "macs": r.macs,
            "conv_depth": r.conv_depth, "params": r.params}


def _settings(method: str, base: TrainConfig, cfg, teacher) -> dict[str, Any]:
    train_settings = {k: v for k, v in base.to_dict().items() if k not in RUNTIME_FIELDS}
    return {"method": method, "train": train_settings, method: cfg.to_dict(),
            "teacher": teacher_record(teacher) if isinstance(teacher, (str, Path)) else None}


# what may differ on a rerun: the teacher's path (it is compared by content), how training runs,
# and the base recipe's schedule: it only trains the all-ReLU base, whose own run folder (OUT/base)
# checks it, while every stage sets its own (so `relucut snl --teacher` matches a frontier's folder)
BASE_SCHEDULE = ("lr", "epochs", "schedule", "step_size", "milestones")
SETTINGS_RUNTIME = ("teacher.path", *(f"train.{k}" for k in (*RUNTIME_FIELDS, *BASE_SCHEDULE)))


def _upgrade_teacher(out: Path) -> None:
    """Settings written before teachers were recorded by content name them by path: record that
    teacher's content, so the folder compares with today's settings (and may then move)."""
    saved = read_settings(out)
    if saved is not None and isinstance(saved.get("teacher"), str) and Path(saved["teacher"]).exists():
        atomic_write_json(out / "config.json", {**saved, "teacher": teacher_record(saved["teacher"])})


def run_in_folder(spec: ModelSpec, data: DataSplits, out: str | Path, cfg, method: str, base: TrainConfig | None,
         teacher, progress: bool, body: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Checks the settings, claims ``out`` for them (refused if it holds another run or another
    process uses it; a refusal for bad input leaves nothing behind), returns the result of a run
    that already ended there, else gets the all-ReLU start point and runs
    ``body(out, base, teacher_model, base_cost)``; the result gets the baseline's cost and accuracy
    and the seconds taken, and is written to ``out/result.json``."""
    started = time.time()
    cfg.check()
    if cfg.budget is None:
        raise RelucutError(f"{method} needs a ReLU budget; give e.g. --budget 25k")
    base = base_config(spec, data, base)
    out = Path(out)
    ranks = init_distributed()  # under torchrun every rank trains; rank 0 alone holds the folder and writes
    if ranks.main and out.is_dir():
        _upgrade_teacher(out)
    with RunDir(out, _settings(method, base, cfg, teacher), runtime=SETTINGS_RUNTIME) if ranks.main else \
            contextlib.nullcontext() as run:
        finished = run.finished() if ranks.main else None
        done = finished is not None and export_intact(out / "export")  # the same settings ran to the end
        if _agree(ranks, done):
            return finished  # (a damaged export: the stages resume from their finished runs and export again)
        teacher_model = base_model(base, data, out, teacher, progress)
        base_cost = _base_cost(teacher_model, spec)
        result = body(out, base, teacher_model, base_cost)
        result["baseline"] = {**base_cost, **accuracy(teacher_model, data)}
        result["seconds"] = time.time() - started
        if ranks.main:
            run.finish(result)
        ranks.barrier()
    return result


def _agree(ranks, flag: bool) -> bool:
    """Rank 0's answer on every rank (a single process: its own)."""
    import torch

    return bool(ranks.broadcast_(torch.tensor([int(flag)]))[0]) if ranks.world > 1 else flag


def run_snl(spec: ModelSpec, data: DataSplits, out: str | Path, cfg, *, base: TrainConfig | None = None,
            teacher: nn.Module | str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """SNL on ``spec`` to ``cfg.budget`` ReLUs: stages, export and ``result.json`` under ``out``."""

    def body(out: Path, base: TrainConfig, teacher_model: nn.Module, base_cost: dict[str, Any]) -> dict[str, Any]:
        model = start_model(teacher_model)
        res = snl(model, frozen_copy(teacher_model), data, base, cfg, out, progress=progress)
        cost = export(out / "export", model, spec, meta={"method": "snl", "budget": cfg.budget})
        return {
            "method": f"snl-{cfg.granularity}", "budget": cfg.budget,
            "search_epochs_run": res.search_epochs_run, "relaxed_relus_at_stop": res.relaxed_relus_at_stop,
            "l1_final": res.l1_final, "forced_topk": res.forced_topk,
            "result": result_columns(cost, base_cost, accuracy(model, data)),
        }

    return run_in_folder(spec, data, out, cfg, "snl", base, teacher, progress, body)


def run_senet(spec: ModelSpec, data: DataSplits, out: str | Path, cfg, *,
              base: TrainConfig | None = None, teacher: nn.Module | str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """SENet (optionally shallow, with an AC exit) on ``spec`` to ``cfg.budget`` ReLUs under ``out``."""
    if cfg.aux_after:  # refused before the folder is claimed
        check_aux_model(spec.build(), cfg.aux_after)
    if cfg.shallow:
        check_shallow_model(addressable(spec.build()), spec.name)

    def body(out: Path, base: TrainConfig, teacher_model: nn.Module, base_cost: dict[str, Any]) -> dict[str, Any]:
        model = start_model(teacher_model)
        stage2 = {}

        def after_stage2(m: nn.Module) -> None:
            stage2.update(accuracy(m, data))

        res = senet(model, frozen_copy(teacher_model), data, base, cfg, out, progress=progress,
                    after_stage2=after_stage2)
        meta = {"method": "senet", "budget": cfg.budget, "shallow_blocks": res.shallow_blocks}
        cost = export(out / "export", model, spec, shallow_blocks=res.shallow_blocks, meta=meta)
        stem_sites = {s.name for s in find_sites(teacher_model, spec.input_size) if s.stage == "stem"}
        stem_budget = sum(n for name, n in res.layer_budget.items() if name in stem_sites)
        without_gb = {"relus": cfg.budget, "relus_without_stem": cfg.budget - stem_budget,
                      "conv_depth": base_cost["conv_depth"], "macs": base_cost["macs"]}
        no_accuracy = {"val_acc": None, "test_acc": None}
        result: dict[str, Any] = {
            "method": "senet" + ("+shallow" if cfg.shallow else "") + ("+ac" if cfg.aux_after else ""),
            "budget": cfg.budget, "layer_budget": res.layer_budget, "block_sensitivity": res.block_sensitivity,
            "layer_sensitivity": res.layer_sensitivity, "shallow_blocks": res.shallow_blocks,
            "faded_sites": res.faded_sites, "stage2": stage2,
            "result": result_columns(cost, base_cost, accuracy(model, data)),
            "masks_only": result_columns(without_gb, base_cost, no_accuracy) if cfg.shallow else None,
        }
        if res.aux_head is not None:
            ac_cost = export(out / "export_ac", model, spec, shallow_blocks=res.shallow_blocks,
                             aux=(res.aux_head, cfg.aux_after), meta=meta)
            ac_model = AuxExit(model, res.aux_head, cfg.aux_after)
            result["ac_output"] = result_columns(ac_cost, base_cost, accuracy(ac_model, data))
        return result

    return run_in_folder(spec, data, out, cfg, "senet", base, teacher, progress, body)
