"""End-to-end runs (used by the CLI and the benchmark): base model, method, evaluation, export.

An output folder holds ``config.json`` (the resolved settings), ``base.pt`` (the all-ReLU model
the method starts from and distills from; reused when present, so a rerun skips its training),
``export/`` (plan.json, recipe.json, model.pt, cost.json), ``export_ac/`` for an AC exit, and
``result.json`` with the paper's Table 1/2 columns. Every epoch of every stage is checkpointed
there too (``*_progress.pt`` while the base, the SNL search or SENet's mask learning runs,
``*_search.pt`` / ``*_stage2.pt`` once its masks are frozen, ``*_finetune.pt``): rerunning the
same command after a kill resumes from the last epoch and ends as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from relucut.cost import count
from relucut.errors import RelucutError
from relucut.finegrained.artifact import export
from relucut.finegrained.aux import AuxExit
from relucut.finegrained.loop import Data, evaluate, run_epochs
from relucut.finegrained.senet import SENetConfig, senet
from relucut.finegrained.snl import SNLConfig, frozen_copy, snl
from relucut.models.registry import ModelSpec
from relucut.plan import atomic_write_text
from relucut.train.loop import seed_everything


def base_model(spec: ModelSpec, data: Data, out: Path, *, epochs: int, lr: float = 0.05, seed: int = 0,
               teacher: nn.Module | None = None, progress: bool = True,
               device: str | torch.device = "cpu") -> nn.Module:
    """The all-ReLU model on ``device``: ``teacher`` if given, else ``out/base.pt`` if present, else
    trained now. Everything the methods build from it follows its device."""
    if teacher is not None:
        return teacher.to(device)
    path = out / "base.pt"
    seed_everything(seed)
    model = spec.build().to(device)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        return model
    milestones = [epochs // 2, 3 * epochs // 4] if epochs >= 4 else []
    run_epochs(model, data, lambda x, y: F.cross_entropy(model(x), y), epochs=epochs, lr=lr,
               milestones=milestones, seed=seed, label="all-ReLU base", progress=progress,
               checkpoint=out / "base_progress.pt")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".base.pt.tmp"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
    return model


def _columns(cost: dict[str, Any], base: dict[str, Any], accuracy: float | None) -> dict[str, Any]:
    return {
        "relus": cost["relus"], "accuracy": accuracy, "conv_depth": cost["conv_depth"], "macs": cost["macs"],
        "mac_saving": base["macs"] / max(1, cost["macs"]), "relu_reduction": base["relus"] / max(1, cost["relus"]),
    }


def _base_cost(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    r = count(model, spec.input_size)
    return {"relus": r.relus, "macs": r.macs, "conv_depth": r.conv_depth, "params": r.params}


def _write(out: Path, name: str, data: dict[str, Any]) -> None:
    atomic_write_text(out / name, json.dumps(data, indent=1))


def _claim(out: Path, config: dict[str, Any]) -> None:
    """Writes the resolved settings; a folder holding another run's settings is refused, since
    its checkpoints would be resumed under the wrong settings."""
    config = json.loads(json.dumps(config))
    path = out / "config.json"
    if path.is_file() and json.loads(path.read_text()) != config:
        raise RelucutError(f"'{out}' holds a run with other settings; choose another --out, or delete it to restart")
    _write(out, "config.json", config)


def run_snl(spec: ModelSpec, data: Data, out: Path, cfg: SNLConfig, *, base_epochs: int = 10,
            teacher: nn.Module | None = None, progress: bool = True,
            device: str | torch.device = "cpu") -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, {"method": "snl", "model": spec.to_dict(), "base_epochs": base_epochs, "snl": cfg.to_dict()})
    start = time.time()
    base = base_model(spec, data, out, epochs=base_epochs, seed=cfg.seed, teacher=teacher, progress=progress,
                      device=device)
    base_cost = _base_cost(base, spec)
    base_acc = evaluate(base, data)
    model = copy.deepcopy(base)
    res = snl(model, frozen_copy(base), data, spec.input_size, cfg, progress=progress, workdir=out)
    cost = export(out / "export", model, spec, meta={"method": "snl", "budget": cfg.budget})
    result = {
        "method": f"snl-{cfg.granularity}", "budget": cfg.budget, "baseline": {**base_cost, "accuracy": base_acc},
        "search_epochs_run": res.search_epochs_run, "relaxed_relus_at_stop": res.relaxed_relus_at_stop,
        "l1_final": res.l1_final, "result": _columns(cost, base_cost, evaluate(model, data)),
        "seconds": time.time() - start,
    }
    _write(out, "result.json", result)
    return result


def run_senet(spec: ModelSpec, data: Data, out: Path, cfg: SENetConfig, *, base_epochs: int = 10,
              teacher: nn.Module | None = None, progress: bool = True,
              device: str | torch.device = "cpu") -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, {"method": "senet", "model": spec.to_dict(), "base_epochs": base_epochs, "senet": asdict(cfg)})
    start = time.time()
    base = base_model(spec, data, out, epochs=base_epochs, seed=cfg.seed, teacher=teacher, progress=progress,
                      device=device)
    base_cost = _base_cost(base, spec)
    base_acc = evaluate(base, data)
    model = copy.deepcopy(base)
    stage2 = {}

    def after_stage2(m: nn.Module) -> None:
        stage2["accuracy"] = evaluate(m, data)

    res = senet(model, frozen_copy(base), data, spec.input_size, cfg, progress=progress,
                after_stage2=after_stage2, workdir=out)
    meta = {"method": "senet", "budget": cfg.budget, "shallow_blocks": res.shallow_blocks}
    cost = export(out / "export", model, spec, shallow_blocks=res.shallow_blocks, meta=meta)
    without_gb = {"relus": cfg.budget, "conv_depth": base_cost["conv_depth"], "macs": base_cost["macs"]}
    result: dict[str, Any] = {
        "method": "senet" + ("+shallow" if cfg.shallow else "") + ("+ac" if cfg.aux_after else ""),
        "budget": cfg.budget, "baseline": {**base_cost, "accuracy": base_acc},
        "layer_budget": res.layer_budget, "block_sensitivity": res.block_sensitivity,
        "shallow_blocks": res.shallow_blocks, "stage2_accuracy": stage2.get("accuracy"),
        "result": _columns(cost, base_cost, evaluate(model, data)),
        "masks_only": _columns(without_gb, base_cost, None) if cfg.shallow else None,
    }
    if res.aux_head is not None:
        ac_cost = export(out / "export_ac", model, spec, shallow_blocks=res.shallow_blocks,
                         aux=(res.aux_head, cfg.aux_after), meta=meta)
        ac_model = AuxExit(model, res.aux_head, cfg.aux_after)
        result["ac_output"] = _columns(ac_cost, base_cost, evaluate(ac_model, data))
    result["seconds"] = time.time() - start
    _write(out, "result.json", result)
    return result
