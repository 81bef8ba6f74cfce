"""ReLUPruner: the authors' own code against relucut's ReLUPruner, same data, base, budget, epochs
(issue 23, item 4).

The authors' code is not part of relucut and is never committed. Check it out into the
git-ignored ``runs/`` folder first (the commit this harness was written against):

    git clone https://github.com/Orange2019220/ReluPruner runs/relupruner-authors
    git -C runs/relupruner-authors checkout e74b70a8aef10ce41eb968b18fbef34971434afa

This script imports their package ``relupruner`` from that folder (``engine.py``: the pruning and
fine-tuning epochs and evaluation; ``importance.py``, ``pruning.py``, ``losses.py``,
``models/common.py``: their importance, schedule, masked ReLU and losses), checked beforehand:
plain torch, no data download (their ``data.py`` is not imported), nothing networked. It drives
them as their ``scripts/train_pruner.py`` and ``scripts/finetune.py`` ``main()`` do (importance
momentum 0.95, depth bias 0.2, history 10; SGD momentum 0.9, weight decay 5e-4, MultiStepLR x0.1;
the at-budget epoch best on validation goes to fine-tuning; the fine-tuning epoch best on
validation is kept), on relucut's data split, network and all-ReLU base:

* network: relucut's ResNet18, width 8, 16x16 (rho 0.5): 17,408 ReLUs. An adapter gives it their
  model interface (``ModelOutput``; every ReLU goes through their ``ActivationCursor``, so their
  ``masked_relu`` applies the masks and collects x and y). Their own ResNet has no stem ReLU; here
  the stem's ReLU is a prunable site like every other, in both runs.
* student and teacher: relucut's all-ReLU base (their ``--init-from-teacher``; their configs
  train the student from scratch), the same weights in both runs.
* data: the split of bench/finegrained_cifar10.py (first N of the first 45,000 CIFAR-10 training
  images train, the next 1,000 validate, the last 5,000 are the held-out test), batches from
  relucut's ``DeviceBatches`` with the engine's per-epoch shuffling and crop+flip: both runs see the
  same batches in the same order.
* schedule: the same epochs, warm-up, target fraction, update interval, lrs and loss weights.

Before training, it feeds the same random tensors to their importance and schedule and to
relucut's and reports the largest difference (the formulas, not the training, compared). Two more
rows of relucut's runs tell the stages apart: its stage 1 alone (the last pruning epoch), and its
stage 2 without the attention term (from a copy of the same finished stage 1).

    nice -n 10 .venv/bin/python bench/relupruner_authors.py --seeds 0,1 --budgets 3584,1024
    nice -n 10 .venv/bin/python bench/relupruner_authors.py --seeds 0,1 --budgets 3584 --linear-stem
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
import statistics
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from finegrained_cifar10 import FULL_RELUS, SPEC, cifar_data
from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.finegrained.artifact import export
from relucut.finegrained.budget import binarize_to_budget
from relucut.finegrained.common import mask_sites
from relucut.finegrained.pipeline import base_config, base_model
from relucut.finegrained.relupruner import relupruner
from relucut.methods.relupruner import ReLUPrunerConfig
from relucut.finegrained.relupruner_importance import TaylorImportance, chooses_masks, keep_fraction
from relucut.plan import atomic_write_text
from relucut.sites import find_sites
from relucut.train import TrainConfig
from relucut.train.batches import DeviceBatches, epoch_generator
from relucut.train.evaluate import evaluate

RESULTS = Path(__file__).parent / "results"
AUTHORS_COMMIT = "e74b70a8aef10ce41eb968b18fbef34971434afa"


def load_authors(folder: Path) -> dict:
    """Their modules, imported from ``folder`` (refused with the checkout command if absent)."""
    if not (folder / "relupruner" / "engine.py").is_file():
        raise SystemExit(f"no ReLUPruner checkout at {folder}; run: git clone "
                         f"https://github.com/Orange2019220/ReluPruner {folder} && "
                         f"git -C {folder} checkout {AUTHORS_COMMIT}")
    sys.path.insert(0, str(folder.resolve()))
    names = ("engine", "importance", "pruning", "losses", "utils", "models.common")
    modules = {n: importlib.import_module(f"relupruner.{n}") for n in names}
    modules["commit"] = checkout_commit(folder)
    modules["files"] = {str(Path(m.__file__).relative_to(folder.resolve())):
                        hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
                        for n, m in modules.items() if n in names}
    return modules


def checkout_commit(folder: Path) -> str:
    """HEAD of ``folder`` when it is a repository's top (not of a repository it sits in)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != folder.resolve():
        return "not a git checkout (file hashes below)"
    return git("rev-parse", "HEAD")


# -- their model interface on relucut's network ----------------------------------------------------
class CursorStep(nn.Module):
    """Stands where a ReLU was: the current forward's ``ActivationCursor`` (theirs) handles it."""

    def __init__(self, owner: AuthorsNet):
        super().__init__()
        self.owner = [owner]  # a list: not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.owner[0].cursor(x)


class AuthorsNet(nn.Module):
    """relucut's model with their forward signature: ``(x, masks=None, collect_activations=False)``
    -> their ``ModelOutput(logits, stage outputs, pre-activations, post-activations)``."""

    def __init__(self, net: nn.Module, authors: dict, linear_stem: bool = False):
        super().__init__()
        self.net, self.authors, self.cursor = net, authors, None
        sites = find_sites(net, SPEC.input_size)
        stem = {s.module_path for s in sites if s.stage == "stem"} if linear_stem else set()
        for path, module in list(net.named_modules()):
            if isinstance(module, nn.ReLU):  # their student's stem has no ReLU: with linear_stem, none here
                net.set_submodule(path, nn.Identity() if path in stem else CursorStep(self))
        self.features: list[torch.Tensor] = []
        for stage in net.stage_names[1:]:
            getattr(net, stage).register_forward_hook(lambda _m, _i, out: self.features.append(out))

    def forward(self, x, masks=None, collect_activations=False):
        common = self.authors["models.common"]
        self.cursor, self.features = common.ActivationCursor(masks, collect_activations), []
        logits = self.net(x)
        self.cursor.validate()
        return common.ModelOutput(logits, list(self.features), self.cursor.pre, self.cursor.post)


class EpochLoader:
    """Each pass is the next epoch of the engine's batches (same shuffle and augmentation)."""

    def __init__(self, data: DataSplits, engine: TrainConfig):
        self.batches = DeviceBatches(data.train, data.mean, data.std, "cpu", augment=engine.augment,
                                     padding=engine.crop_padding)
        self.batch_size, self.seed, self.epoch = engine.batch_size, engine.seed, 0

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch, torch.device("cpu"))
        self.epoch += 1
        return self.batches.batches(self.batch_size, train=True, generator=generator)


class PlainLoader:
    def __init__(self, split, data: DataSplits, batch_size: int = 512):
        self.batches, self.batch_size = DeviceBatches(split, data.mean, data.std, "cpu"), batch_size

    def __iter__(self):
        return self.batches.batches(self.batch_size)


def their_optimizer(model: nn.Module, lr: float, milestones: list[int]):
    """scripts/common.py make_optimizer with their defaults (momentum 0.9, weight decay 5e-4, x0.1)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


def authors_run(authors: dict, base: nn.Module, data: DataSplits, engine: TrainConfig,
                cfg: ReLUPrunerConfig, seed: int) -> dict:
    """Their stage 1 (scripts/train_pruner.py main) and stage 2 (scripts/finetune.py main)."""
    eng, imp, prune = authors["engine"], authors["importance"], authors["pruning"]
    started = time.perf_counter()
    torch.manual_seed(seed)
    device = torch.device("cpu")
    teacher = AuthorsNet(copy.deepcopy(base), authors).eval()
    student = AuthorsNet(copy.deepcopy(base), authors, cfg.linear_stem).train()
    train_loader, val_loader = EpochLoader(data, engine), PlainLoader(data.val, data)
    masks = eng.initialize_dense_masks(student, data.input_size[1], device)
    layers = imp.LayerImportance(momentum=0.95, depth_bias=0.2)
    importance = imp.GlobalAdaptiveTaylorImportance(momentum=0.95, use_second_order=True,
                                                    layer_importance=layers, activation_history_size=10)
    _, total = prune.count_kept_relus(masks)
    scheduler = prune.ProgressiveMaskScheduler(
        target_keep_ratio=cfg.budget / total, update_interval=cfg.update_every,
        warmup_epochs=cfg.warmup_epochs, target_epoch_ratio=cfg.target_at, total_epochs=cfg.prune_epochs)
    optimizer, lr_schedule = their_optimizer(student, cfg.lr, [150, 180, 210])  # as run: no decay in stage 1
    best_at_budget, kept_state, log = -1.0, None, []
    for epoch in range(1, cfg.prune_epochs + 1):
        scheduler.set_epoch(epoch)
        metrics, masks = eng.train_pruning_epoch(
            student, teacher, train_loader, optimizer, device, masks, importance, scheduler, gamma=0.5,
            alpha=0.5, temperature=4.0, target_relus=cfg.budget)
        validation = eng.evaluate(student, val_loader, device, masks)
        lr_schedule.step()
        kept, _ = prune.count_kept_relus(masks)
        log.append({"stage": "prune", "epoch": epoch, "val_acc": validation.accuracy, "relus": kept,
                    "train_loss": metrics.loss})
        if kept == cfg.budget and validation.accuracy > best_at_budget:  # their best_at_budget.pt
            best_at_budget = validation.accuracy
            kept_state = (copy.deepcopy(student.state_dict()), [m.clone() for m in masks], epoch)
    if kept_state is None:
        raise RelucutError("the authors' stage 1 never reached the budget")
    student.load_state_dict(kept_state[0])
    masks = kept_state[1]
    optimizer, lr_schedule = their_optimizer(student, cfg.finetune_lr, cfg.milestones())
    best, best_state = -1.0, None
    for epoch in range(1, cfg.finetune_epochs + 1):
        metrics = eng.finetune_epoch(student, teacher, train_loader, optimizer, device, masks, gamma=0.5,
                                     alpha=0.5, beta=cfg.feature_weight, temperature=4.0)
        validation = eng.evaluate(student, val_loader, device, masks)
        lr_schedule.step()
        log.append({"stage": "finetune", "epoch": epoch, "val_acc": validation.accuracy,
                    "train_loss": metrics.loss, "pram": metrics.pram_loss})
        if validation.accuracy > best:
            best, best_state = validation.accuracy, copy.deepcopy(student.state_dict())
    if best_state is not None:
        student.load_state_dict(best_state)
    test = eng.evaluate(student, PlainLoader(data.test, data), device, masks)
    kept, _ = prune.count_kept_relus(masks)
    return {"relus": kept, "test_acc": test.accuracy / 100,
            "val_acc": (best if best_state is not None else best_at_budget) / 100,
            "prune_epoch_kept": kept_state[2], "per_site": [int(m.sum()) for m in masks],
            "seconds": time.perf_counter() - started, "log": log}


def relucut_run(base: nn.Module, data: DataSplits, engine: TrainConfig, cfg: ReLUPrunerConfig,
                out: Path) -> dict:
    started = time.perf_counter()
    model = copy.deepcopy(base).train()
    res = relupruner(model, base, data, engine, cfg, out, progress=False)
    meta = {"method": "relupruner", "budget": cfg.budget}
    cost = export(out / "export", model, SPEC, meta=meta, onnx=False)
    return {"relus": cost["relus"], "test_acc": evaluate(model, data, split="test")["acc"],
            "val_acc": evaluate(model, data, split="val")["acc"], "mask_choices": res.mask_choices,
            "per_site": [int(s.mask.sum()) for s in mask_sites(model).values()],
            "seconds": time.perf_counter() - started}


# -- the formulas on identical inputs ----------------------------------------------------------------
SCHEDULES = ((150, 5, 0.6, 100, 391), (20, 2, 0.6, 20, 78), (12, 3, 0.5, 7, 13))  # E, W, at, N, steps


def formula_check(authors: dict, seed: int = 0) -> dict:
    """Their importance, schedule and top-k against relucut's on the same random tensors."""
    imp, prune = authors["importance"], authors["pruning"]
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a": (2, 3, 3), "b": (4, 2, 2), "c": (3, 1, 1)}
    theirs = imp.GlobalAdaptiveTaylorImportance(0.95, True, imp.LayerImportance(0.95, 0.2), 10)
    ours = TaylorImportance(shapes)
    for step in range(30):
        for index, (name, shape) in enumerate(shapes.items()):
            x = torch.randn(8, *shape, generator=generator)
            g = torch.randn(8, *shape, generator=generator) * (index + 1) * (1 + step % 3)
            theirs.update(theirs.compute(x, g, index), index)
            ours.observe(name, x, g)
    names = list(shapes)
    score_diff = max(float((theirs.importance[i] - ours.scores[n]).abs().max()
                           / theirs.importance[i].abs().max()) for i, n in enumerate(names))
    their_masks = theirs.global_masks(0.3)
    entries = {n: SimpleNamespace(scores=theirs.importance[i], unit_relus=1) for i, n in enumerate(names)}
    ours_masks = binarize_to_budget(entries, sum(int(m.sum()) for m in their_masks))
    same_topk = all(torch.equal(their_masks[i].bool(), ours_masks[n]) for i, n in enumerate(names))
    schedule_diff, step_mismatches = 0.0, 0
    for epochs, warmup, at, every, steps in SCHEDULES:
        cfg = ReLUPrunerConfig(budget=1, prune_epochs=epochs, warmup_epochs=warmup, target_at=at,
                               update_every=every)
        sched = prune.ProgressiveMaskScheduler(0.1, every, warmup, at, epochs)
        for epoch in range(1, epochs + 1):
            sched.set_epoch(epoch)
            schedule_diff = max(schedule_diff, abs(sched.keep_ratio() - keep_fraction(cfg, epoch - 1, 0.1)))
            for i in range(steps):
                ours_now = chooses_masks(cfg, (epoch - 1) * steps + i, epoch - 1)
                step_mismatches += sched.should_update() != ours_now
    pairs = zip(theirs.layer_importance.weights().values(), ours.layer_weights().values())
    return {"max_relative_score_difference": score_diff, "same_topk_masks": same_topk,
            "max_keep_fraction_difference": schedule_diff, "mask_update_step_mismatches": step_mismatches,
            "max_layer_weight_difference": max(abs(a - b) for a, b in pairs)}


# -- the bench ---------------------------------------------------------------------------------------
def run_seed(args, authors: dict, seed: int, data: DataSplits) -> dict:
    out = Path(args.out) / f"seed{seed}"
    quarters = [round(args.base_epochs * f) for f in (0.25, 0.5, 0.75)]  # as bench/finegrained_cifar10.py
    engine = base_config(SPEC, data, TrainConfig(epochs=args.base_epochs, batch_size=args.batch_size,
                                                 device="cpu", seed=seed, milestones=quarters))
    base = base_model(engine, data, out, None, progress=False)
    row = {"seed": seed, "base_test_acc": evaluate(base, data, split="test")["acc"], "budgets": {}}
    for budget in args.budgets:
        cfg = ReLUPrunerConfig(budget=budget, prune_epochs=args.prune_epochs,
                               warmup_epochs=args.warmup_epochs, target_at=args.target_at,
                               update_every=args.update_every, finetune_epochs=args.finetune_epochs,
                               linear_stem=args.linear_stem)
        folder = out / budget_folder(args, budget)
        pair = {}
        for who in ("relucut", "authors", "relucut-nofeat"):
            cached = folder / f"{who}.json"
            if cached.is_file():  # a finished run of an earlier invocation
                pair[who] = json.loads(cached.read_text())
                continue
            if who == "relucut":
                pair[who] = relucut_run(base, data, engine, cfg, folder / "relucut")
            elif who == "authors":
                pair[who] = authors_run(authors, base, data, engine, cfg, seed)
            else:  # the same stage 1 (its finished run directory, copied), stage 2 without the attention term
                if not (folder / who / "prune").exists():
                    shutil.copytree(folder / "relucut" / "prune", folder / who / "prune")
                pair[who] = relucut_run(base, data, engine, dataclasses.replace(cfg, feature_weight=0.0),
                                        folder / who)
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cached, json.dumps(pair[who], indent=1))
            print(f"seed {seed} budget {budget} {who}: relus {pair[who]['relus']}, test "
                  f"{100 * pair[who]['test_acc']:.2f} %, {pair[who]['seconds'] / 60:.1f} min", flush=True)
        row["budgets"][str(budget)] = pair
    return row


def budget_folder(args, budget: int) -> str:
    return f"budget{budget}" + ("-linearstem" if args.linear_stem else "")


def relucut_epochs(run: Path) -> dict[str, list[dict]]:
    """The per-epoch metrics of relucut's two stages (their engine run directories)."""
    return {stage: [json.loads(line) for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
            for stage in ("prune", "finetune")}


def _fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})" if values else "-"


STAGES = ("stem", "s1", "s2", "s3", "s4")


def kept_per_stage(per_site: list[int]) -> dict[str, float]:
    """Fraction of each stage's ReLUs kept, from per-site counts in forward order."""
    sites = find_sites(SPEC.build(), SPEC.input_size)
    per_site = [0] * (len(sites) - len(per_site)) + list(per_site)  # the authors' linear stem: no entry
    kept, size = dict.fromkeys(STAGES, 0), dict.fromkeys(STAGES, 0)
    for site, ones in zip(sites, per_site):
        kept[site.stage] += ones
        size[site.stage] += site.numel
    return {st: kept[st] / size[st] for st in STAGES}


def write_summary(args, authors: dict, check: dict, seeds: list[dict], seconds: float) -> None:
    setting = {"model": SPEC.to_dict(), "relus_full": FULL_RELUS, "train_images": args.train_images,
               "budgets": args.budgets, "base_epochs": args.base_epochs, "prune_epochs": args.prune_epochs,
               "finetune_epochs": args.finetune_epochs, "warmup_epochs": args.warmup_epochs,
               "target_at": args.target_at, "update_every": args.update_every, "batch_size": args.batch_size,
               "linear_stem": args.linear_stem, "authors_commit": authors["commit"],
               "authors_files_sha256": authors["files"], "threads": 1,
               "seeds": [s["seed"] for s in seeds]}
    for budget in args.budgets:
        for s in seeds:  # relucut's stage 1 alone: its last epoch, tested by the engine
            run = Path(args.out) / f"seed{s['seed']}" / budget_folder(args, budget) / "relucut"
            stage1 = json.loads((run / "prune" / "final.json").read_text())
            s["budgets"][str(budget)]["relucut-stage1"] = {"relus": budget, "test_acc": stage1["test_acc"],
                                                           "val_acc": stage1["best_val_acc"]}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    report = "relupruner_authors" + ("_linearstem" if args.linear_stem else "")
    atomic_write_text(results / f"{report}.json", json.dumps(
        {"setting": setting, "formula_check": check, "seeds": seeds, "seconds": seconds}, indent=1))
    base = [100 * s["base_test_acc"] for s in seeds]
    files = ", ".join(f"`{name}` {digest}" for name, digest in authors["files"].items())
    budget_epoch = int(args.warmup_epochs + (args.prune_epochs - args.warmup_epochs) * args.target_at)
    lines = [
        "# ReLUPruner: the authors' code against relucut's, CPU scale", "",
        f"ResNet18, base width 8, 16x16 inputs (rho 0.5): {FULL_RELUS:,} ReLUs. CIFAR-10: the first "
        f"{args.train_images:,} of the first 45,000 training images train, the next 1,000 validate, the "
        f"last 5,000 are the held-out test. Seeds {', '.join(str(s['seed']) for s in seeds)}; each cell: the "
        f"mean, then the seeds'. All-ReLU base and teacher ({args.base_epochs} epochs): **{_fmt(base)} %**. "
        f"Both runs start from that base: {args.prune_epochs} pruning epochs (all ReLUs while the epoch, "
        f"from 1, is below {args.warmup_epochs}; the budget from epoch {budget_epoch}; masks re-chosen every "
        f"{args.update_every} steps of {args.batch_size} images, twice that at the budget), then "
        f"{args.finetune_epochs} fine-tuning epochs, on the same batches in the same order. One CPU thread."
        + (" The stem's ReLUs are identities in both (the authors' own ResNet has none)." if args.linear_stem
           else " The stem's ReLUs compete for the budget in both (the authors' own ResNet has none)."),
        "",
        f"The authors' code: {authors['commit']}; files (sha256, 16 hex): {files}.", "",
        "| budget | run | #ReLUs | test acc % | val acc % | minutes |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    runs = (("relucut", "relucut's ReLUPruner"), ("authors", "the authors' code"))
    extra = (("relucut-stage1", "relucut's, stage 1 only (no fine-tuning)"),
             ("relucut-nofeat", "relucut's, stage 2 without the attention term"))
    for budget in args.budgets:
        for who, name in runs + extra:
            rows = [s["budgets"][str(budget)][who] for s in seeds]
            relus = " / ".join(f"{v:,}" for v in sorted({r["relus"] for r in rows}))
            test, val = _fmt([100 * r["test_acc"] for r in rows]), _fmt([100 * r["val_acc"] for r in rows])
            minutes = "-" if who == "relucut-stage1" else _fmt([r["seconds"] / 60 for r in rows])
            lines.append(f"| {budget:,} | {name} | {relus} | {test} | {val} | {minutes} |")
    lines += ["", "| budget | relucut - authors, test points (per seed) | mean |", "| ---: | --- | ---: |"]
    for budget in args.budgets:
        pairs = [s["budgets"][str(budget)] for s in seeds]
        diffs = [100 * (p["relucut"]["test_acc"] - p["authors"]["test_acc"]) for p in pairs]
        per_seed = ", ".join(f"{d:+.2f}" for d in diffs)
        lines.append(f"| {budget:,} | {per_seed} | {statistics.mean(diffs):+.2f} |")
    lines += ["", "## Side by side, epoch by epoch", "",
              "Stage 1: are the kept ReLUs after each epoch the same in both runs, and how far apart are "
              "the training losses (mean |difference| over the epochs)? Validation accuracy % at the end of "
              "stage 1 (relucut: its last epoch; the authors': their at-budget epoch best on validation) and "
              "at the best fine-tuning epoch.", "",
              "| budget | seed | same ReLUs each epoch | mean abs. train-loss difference "
              "| relucut val: stage 1 -> 2 | authors' val: stage 1 -> 2 |",
              "| ---: | ---: | --- | ---: | --- | --- |"]
    for budget in args.budgets:
        for s in seeds:
            pair = s["budgets"][str(budget)]
            run = Path(args.out) / f"seed{s['seed']}" / budget_folder(args, budget) / "relucut"
            ours = relucut_epochs(run)
            theirs = [r for r in pair["authors"]["log"] if r["stage"] == "prune"]
            same = [r["relus"] for r in ours["prune"]] == [r["relus"] for r in theirs]
            gap = statistics.mean(abs(a["train_loss"] - b["train_loss"])
                                  for a, b in zip(ours["prune"], theirs))
            kept_epoch = pair["authors"]["prune_epoch_kept"]
            lines.append(f"| {budget:,} | {s['seed']} | {'yes' if same else 'no'} | {gap:.4f} "
                         f"| {100 * ours['prune'][-1]['val_acc']:.1f} -> "
                         f"{100 * pair['relucut']['val_acc']:.1f} "
                         f"| {theirs[kept_epoch - 1]['val_acc']:.1f} (epoch {kept_epoch}) -> "
                         f"{100 * pair['authors']['val_acc']:.1f} |")
    lines += ["", "## Fraction of each stage's ReLUs kept", "",
              "| budget | run | seed | " + " | ".join(STAGES) + " |",
              "| ---: | --- | ---: |" + " ---: |" * len(STAGES)]
    for budget in args.budgets:
        for who, name in runs:
            for s in seeds:
                stage = kept_per_stage(s["budgets"][str(budget)][who]["per_site"])
                cells = " | ".join(f"{stage[st]:.3f}" for st in STAGES)
                lines.append(f"| {budget:,} | {name} | {s['seed']} | {cells} |")
    lines += ["", "## The formulas on identical inputs", "",
              "Their importance (`GlobalAdaptiveTaylorImportance` + `LayerImportance`), schedule "
              "(`ProgressiveMaskScheduler`) and global top-k against relucut's, on the same random tensors "
              "(3 sites, 30 steps) and three schedules (epochs / warm-up / target_at / interval / steps an "
              "epoch: "
              + ", ".join("/".join(map(str, s)) for s in SCHEDULES) + "):", "",
              "| check | result |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in check.items()]
    lines.append(f"\nThis invocation: {seconds / 60:.1f} min (finished runs are reused).")
    atomic_write_text(results / f"{report}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--authors", type=Path, default=Path("runs/relupruner-authors"),
                        help="a checkout of github.com/Orange2019220/ReluPruner (see the module docstring)")
    parser.add_argument("--out", default="/tmp/relucut-bench/relupruner-authors")
    parser.add_argument("--results", default=str(RESULTS), help="where the summary .md and .json go")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budgets", default="3584,1024")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--base-epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prune-epochs", type=int, default=20)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--target-at", type=float, default=0.6)
    parser.add_argument("--update-every", type=int, default=20,
                        help="steps; 20 of 78 an epoch is their 100 of 391 (CIFAR-10, batch 128)")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--linear-stem", action="store_true",
                        help="both runs: the stem's ReLUs become identities (the authors' ResNet has none)")
    args = parser.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    torch.set_num_threads(1)
    started = time.perf_counter()
    authors = load_authors(args.authors)
    check = formula_check(authors)
    print(json.dumps(check), flush=True)
    data = cifar_data(args.train_images)
    seeds = [run_seed(args, authors, int(s), data) for s in args.seeds.split(",")]
    write_summary(args, authors, check, seeds, time.perf_counter() - started)


if __name__ == "__main__":
    main()
