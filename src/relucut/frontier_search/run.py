"""One frontier across every method: one teacher, one criticality pass, then per budget the networks
of each method that can meet it, each exported and priced under the user's engine.

Layout of the output folder (every training is a resumable run of the engine; each method's folder
is what its own command writes, so ``relucut snl --out OUT/snl/25000 --teacher OUT/teacher`` with
the same settings resumes or reuses it):

    config.json                 what the runs compute (a rerun must match; budgets, methods and the
                                engine may change: what exists is reused)
    teacher/                    the full-ReLU network, KD teacher and start point of the masks (with
                                ``teacher=`` / ``--teacher``: only its export; the run stays where it is)
    deepreduce/                 a ``relucut deepreduce`` search (criticality, candidates/<name>/)
    deepreshape/<budget>/       the HybReNet design for the budget, trained with KD
    snl/<budget>/, snl-channel/<budget>/, senet/<budget>/, senet-shallow/<budget>/
    frontier.json / .csv / .md, frontier.png
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from relucut.cost import count
from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.executors import TrainJob, make_executor
from relucut.export import export_intact, export_run
from relucut.frontier_search.config import FrontierConfig
from relucut.frontier_search.points import markdown, to_csv, unpriced_line
from relucut.frontier_search.pricing import check_latency_budgets, price, rounds
from relucut.methods import EXPORT_DIR, FrontierStep, MethodContext, MethodResult, get_method, per_budget_steps
from relucut.models.registry import ModelSpec
from relucut.pareto import FrontierPoint, best_within, mark
from relucut.rundir import atomic_write_json, atomic_write_text, claim, read_settings
from relucut.train import evaluate, load_checkpoint_model, read_final
from relucut.train.base import base_config, teacher_record
from relucut.train.config import RUNTIME_FIELDS, TrainConfig

FORMAT = "relucut.frontier-search"
VERSION = 2  # 2: the model and the base recipe (each method's folder checks its own settings)


@dataclass
class FrontierResult:
    points: list[FrontierPoint]  # every trained network
    frontier: list[FrontierPoint]  # the undominated ones (validation accuracy vs cost)
    picks: dict[float, FrontierPoint | None]  # per budget: the most accurate network within it
    out: Path


class _Jobs:
    """Progress across the whole search: which budget, which method, and an ETA from the steps of
    the same kind done so far (a DeepReDuce search is far longer than one masked run)."""

    def __init__(self, kinds: list[str], console: Console):
        self.left, self.console = list(kinds), console  # the kinds of the steps still to run, in order
        self.total, self.done = len(kinds), 0
        self.seconds: dict[str, list[float]] = {}

    def _eta(self) -> str:
        known = [sum(self.seconds[k]) / len(self.seconds[k]) for k in self.left if k in self.seconds]
        if not known:
            return ""
        more = " or more" if len(known) < len(self.left) else ""
        return f", about {sum(known) / 60:.1f} min left{more}"

    def run(self, kind: str, what: str, work: Callable[[], Any]) -> Any:
        self.console.print(f"[bold]frontier[/] [{self.done + 1}/{self.total}] {what}{self._eta()}", highlight=False)
        t0 = time.time()
        result = work()
        self.done += 1
        self.left.remove(kind)
        if time.time() - t0 > 1.0:  # reused runs say nothing about the time of new ones
            self.seconds.setdefault(kind, []).append(time.time() - t0)
        return result


class FrontierRun:
    """One frontier search: its folder, the base recipe, the teacher, and what every method's
    frontier steps read (``ctx``, ``out``, ``full``, ``relu_budgets``, ``latency``, ``shared``)."""

    def __init__(self, spec: ModelSpec, config: FrontierConfig, data: DataSplits, out: Path, base: TrainConfig,
                 progress: bool, console: Console, address: str | None, teacher: Path | None = None):
        self.spec, self.config, self.data, self.out, self.base = spec, config, data, out, base
        self.console = console
        self.full = count(spec.build(), spec.input_size)
        # per frontier budget, the masked methods' ReLU budget; an unreachable latency is refused here
        self.relu_budgets = relu_budgets(spec, config, self.full)
        self.latency = config.latency_budgets is not None
        executor = make_executor(config.executor, address, progress=progress, data=data,
                                 cpus_per_job=config.cpus_per_job, gpus_per_job=config.gpus_per_job)
        self.given_teacher = teacher
        self.teacher_dir = Path(teacher) if teacher is not None else out / "teacher"
        self.ctx = MethodContext(spec=spec, data=data, base=base, out=out, teacher=self.teacher_dir,
                                 executor=executor, console=console, progress=progress)
        self.shared: dict[str, Any] = {}  # what one method's steps leave for another's (DeepReDuce's criticality order)
        self.points: list[FrontierPoint] = []
        self._test_acc: dict[str, float | None] = {}  # revealed only for the network chosen per budget
        self._sources: dict[str, Path] = {}  # the trained run each point's export was made from

    def mask_budgets(self) -> list[int]:
        """Distinct ReLU budgets for the masked methods, below the full network's count."""
        return sorted({b for b in self.relu_budgets.values() if b is not None and b < self.full.relus})

    # -- runs ---------------------------------------------------------------------------------------
    def teacher(self) -> None:
        """The full-ReLU teacher (trained here unless given) as the frontier's first point."""
        if self.given_teacher is None:
            job = TrainJob("teacher (full ReLU)", dataclasses.replace(self.base, plan=None, teacher=None),
                           self.teacher_dir)
            final = self.ctx.jobs().run([job], lambda *_: None)[job.key]
        else:
            final = read_final(self.teacher_dir) or {} if self.teacher_dir.is_dir() else {}
            if final.get("best_val_acc") is None:  # a checkpoint file, or a run without validation
                final = {"best_val_acc": evaluate(load_checkpoint_model(self.teacher_dir), self.data, split="val")["acc"]}
        export_dir = self.out / "teacher" / EXPORT_DIR
        if not export_intact(export_dir):
            export_run(self.teacher_dir, export_dir, onnx=False, force=True)
        self.add(MethodResult.of_export("teacher", "teacher", "all ReLUs", export_dir.parent, export_dir,
                                        final.get("best_val_acc"), final.get("test_acc")))

    def steps(self) -> list[FrontierStep]:
        """Every method's steps: those for all budgets first (coarse searches), then budget by
        budget, so a search cut short has whole budgets."""
        steps = []
        for rank, entry in enumerate(self.config.methods_in_order()):
            method, template = get_method(entry), self.config.template(entry)
            make = method.frontier or functools.partial(per_budget_steps, method)
            steps += [(step.budget is not None, step.budget or 0, rank, step) for step in make(entry, template, self)]
        return [step for *_, step in sorted(steps, key=lambda s: s[:3])]

    def add(self, result: MethodResult) -> None:
        if result.val_acc is None:
            raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
        report = result.report  # of the exported network: the priced network is the one that ships
        est = price(report, self.config)
        self.points.append(FrontierPoint(
            method=result.method, name=result.name, plan=result.label, relus=report.relus, val_acc=float(result.val_acc),
            macs=report.macs, relu_layers=est.relu_layers, conv_depth=report.conv_depth, params=report.params,
            run_dir=_relative(result.run_dir, self.out), export_dir=_relative(result.export_dir, self.out),
            budget=result.budget, online_s=est.online_s, total_s=est.total_s, online_bytes=est.online_bytes,
            total_bytes=est.total_bytes, rounds=rounds(est), unpriced=dict(est.unpriced), details=dict(result.details)))
        self._test_acc[result.name] = result.test_acc
        self._sources[result.name] = self.teacher_dir if result.method == "teacher" else Path(result.run_dir)

    # -- the whole search ---------------------------------------------------------------------------
    def run(self) -> FrontierResult:
        steps = self.steps()
        jobs = _Jobs(["teacher", *(step.kind for step in steps)], self.console)
        jobs.run("teacher", "teacher: the full-ReLU network", self.teacher)
        for step in steps:
            jobs.run(step.kind, step.title, lambda step=step: [self.add(r) for r in step.work()])
        return self.finish()

    def finish(self) -> FrontierResult:
        key = self.config.cost_key
        relu_budgets = self.relu_budgets
        front = mark(self.points, key)
        picks: dict[float, FrontierPoint | None] = {}
        for budget in self.config.budget_list():
            pick = best_within(self.points, budget, key)
            picks[budget] = pick
            if pick is not None:
                pick.chosen_for.append(budget)
                pick.test_acc = self._test_acc[pick.name]
        self._finish_exports([*front, *(p for p in picks.values() if p is not None)])
        if self.config.measure:
            self._measure(front)
        title = f"{self.spec.name} on {self.base.dataset}: every method"
        unpriced = unpriced_line(self.points, self.config.engine)
        if unpriced:  # said once, where the user reads the results, and in the tables
            self.console.print(unpriced, highlight=False, soft_wrap=True)
        meta = {"format": FORMAT, "version": 1, "title": title, "model": self.spec.to_dict(),
                "dataset": self.base.dataset, "engine": self.config.engine, "cost": key,
                "selection": "validation accuracy", "budgets": self.config.budget_list(),
                "mask_relu_budgets": {f"{b:g}": r for b, r in relu_budgets.items()},
                "methods": self.config.methods, "criticality_order": self.shared.get("criticality_order")}
        rows = [p.to_dict() for p in self.points]
        atomic_write_json(self.out / "frontier.json", {**meta, "points": rows})
        atomic_write_text(self.out / "frontier.csv", to_csv(self.points))
        sentence = unpriced.removeprefix("warning: ") if unpriced else ""
        note = f"\n{sentence[:1].upper()}{sentence[1:]}.\n" if unpriced else ""  # kinds keep their spelling (SiLU)
        atomic_write_text(self.out / "frontier.md", markdown(self.points, picks, key, self.config.engine, title)
                          + note + _commands(front, self.config))
        from relucut.frontier_search.plot import plot

        plot(self.points, self.out / "frontier.png", title, self.config.engine)
        return FrontierResult(self.points, front, picks, self.out)

    def _finish_exports(self, points: list[FrontierPoint]) -> None:
        """The frontier's and the picks' exports must be intact and hold their model.onnx (checked
        by the hashes their recipes record, not by the files being there): others are exported
        again from the same trained run, and the rebuilt network must count as the point says."""
        from relucut.export import load_export, verify_export

        for p in {p.name: p for p in points}.values():
            export_dir = self.out / p.export_dir
            problems = verify_export(export_dir, need=("model.onnx",))
            if not problems:
                continue
            source = self._sources.get(p.name)
            if source is None or find_run_checkpoint(source) is None:  # a method folder exports in its own run
                raise RelucutError(f"the export of {p.name} in '{export_dir}' is damaged ({problems[0]}); delete "
                                   f"'{self.out / p.run_dir}' and rerun to make it again")
            export_run(source, export_dir, force=True)
            model = load_export(export_dir)
            report = count(model, model.relucut_recipe.model.input_size)
            if (report.relus, report.macs) != (p.relus, p.macs):
                raise RelucutError(f"the export of {p.name} no longer counts as it did ({report.relus:,} ReLUs, "
                                   f"not {p.relus:,}); delete {export_dir} and rerun")

    def _measure(self, front: list[FrontierPoint]) -> None:
        from relucut.export import load_export
        from relucut.pi.measure import measure_many

        models = [load_export(self.out / p.export_dir) for p in front]
        self.console.print(f"[bold]frontier[/]: measuring {len(models)} networks under SPU (Cheetah)")
        # two runs each: the first pays the engine's setup, the second is a typical inference
        for p, m in zip(front, measure_many(models, self.spec.input_size, runs=2)):
            p.measured = {"online_s": m.warm.wall_s, "cpu_s": m.warm.cpu_s, "bytes": m.warm.bytes,
                          "rounds": m.warm.rounds, "matches": m.matches, "engine": m.engine}


def find_run_checkpoint(run: Path) -> Path | None:
    """The checkpoint of an engine run (its folder's best.pt, else last.pt; or the file), or None."""
    if Path(run).is_file():
        return Path(run)
    return next((Path(run) / n for n in ("best.pt", "last.pt") if (Path(run) / n).is_file()), None)


def _relative(path: Path, out: Path) -> str:
    """A path inside the frontier folder as the tables record it (the folder may move)."""
    return str(Path(path).resolve().relative_to(out.resolve()))


def _commands(front: list[FrontierPoint], config: FrontierConfig) -> str:
    lines = ["", "Each network is exported (recipe.json, model.pt, model.onnx; paths relative to this folder); price or measure one with:", ""]
    for p in front:
        lines.append(f"    relucut pi estimate {p.export_dir} --engine {config.engine}   # {p.method}: {p.plan}")
    lines.append("    relucut pi measure EXPORT_DIR   # a real 2PC run under SPU (Cheetah)")
    return "\n".join(lines) + "\n"


def _reshaped_reports(spec: ModelSpec) -> list:
    """Cost of the most reshaped variant (alpha = rho = 0.5) where the factory takes them: a network
    DeepReDuce may reach with fewer MACs than the full one."""
    try:
        small = ModelSpec(spec.name, spec.num_classes, spec.in_chans, spec.image_size,
                          {**spec.kwargs, "alpha": 0.5, "rho": 0.5})
        return [count(small.build(), small.input_size)]
    except (RelucutError, TypeError):
        return []


def relu_budgets(spec: ModelSpec, config: FrontierConfig, full: Any = None) -> dict[float, int | None]:
    """Per frontier budget, the ReLU budget of the masked methods on ``spec``; refuses a latency
    budget that no network can reach (cheap: counts only, before any data is loaded)."""
    if config.latency_budgets is None:
        return {b: int(b) for b in config.budget_list()}
    full = full if full is not None else count(spec.build(), spec.input_size)
    return check_latency_budgets(full, config, _reshaped_reports(spec))


def settings_record(spec: ModelSpec, base: TrainConfig, teacher: Path | None = None) -> dict[str, Any]:
    """What every run of the folder shares: the model, the base recipe and a given teacher (by
    content). Budgets, methods, the engine and each method's settings may change on a rerun: each
    method's folder holds and checks its own settings, so what exists with the same settings is
    reused and the rest is trained."""
    train = {k: v for k, v in base.to_dict().items() if k not in RUNTIME_FIELDS}
    return {"format": FORMAT, "version": VERSION, "model": spec.to_dict(), "train": train,
            "teacher": teacher_record(teacher)}


def _upgrade_record(out: Path) -> None:
    """A version-1 folder recorded the frontier's settings too; today each method's folder checks
    its own, so its record keeps the model and the base recipe."""
    saved = read_settings(out)
    if saved is not None and saved.get("format") == FORMAT and saved.get("version") == 1:
        atomic_write_json(out / "config.json", {**{k: saved.get(k) for k in ("model", "train")},
                                                           "format": FORMAT, "version": VERSION})


def frontier(spec: ModelSpec, config: FrontierConfig, *, data: DataSplits, out: str | Path,
             train: TrainConfig | None = None, teacher: str | Path | None = None, progress: bool = True,
             console: Console | None = None, address: str | None = None) -> FrontierResult:
    """The cross-method frontier of ``spec`` on ``data`` into ``out`` (resumable: rerun the same call).

    ``train``: the base recipe (a ``TrainConfig``; the engine's defaults otherwise) of the teacher,
    DeepReDuce's candidates and DeepReShape's designs; the masked methods' lengths follow it
    (``FrontierConfig.resolve``) unless ``config`` sets them or gives their settings. ``teacher``:
    a trained full-ReLU run dir or checkpoint of ``spec`` on this data (default: one is trained
    into ``out/teacher`` with ``train``'s recipe); a teacher at chance is refused, as by every KD run."""
    base = base_config(spec, data, train)
    config = config.resolve(base.epochs)
    config.check()
    if not len(data.val):
        raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
    out = Path(out)
    teacher = Path(teacher).resolve() if teacher is not None else None
    search = FrontierRun(spec, config, data, out, base, progress, console or Console(), address,
                         teacher)  # checks budgets
    if out.is_dir():
        _upgrade_record(out)
    runtime = ("teacher.path", *(f"train.{k}" for k in RUNTIME_FIELDS))  # how runs go, not what they compute
    with claim(out, settings_record(spec, base, teacher), runtime=runtime):
        return search.run()


__all__ = ["FrontierResult", "FrontierRun", "frontier", "relu_budgets", "settings_record"]
