"""One frontier across every method: one teacher, one criticality pass, then per budget the networks
of each method that can meet it, each exported and priced under the user's engine.

Layout of the output folder (every training is a resumable run of the engine; each method's folder
is what its own command writes, so ``relucut snl --out OUT/snl/25000 --teacher OUT/teacher`` with
the same settings resumes or reuses it):

    config.json                 what the runs compute (a rerun must match; budgets, methods and the
                                engine may change: what exists is reused)
    teacher/                    the full-ReLU network, KD teacher and start point of the masks
    deepreduce/                 a ``relucut deepreduce`` search (criticality, candidates/<name>/)
    deepreshape/<budget>/       the HybReNet design for the budget, trained with KD
    snl/<budget>/, snl-channel/<budget>/, senet/<budget>/, senet-shallow/<budget>/
    frontier.json / .csv / .md, frontier.png
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from relucut.cost import count
from relucut.data.splits import DataSplits
from relucut.deepreduce.executors import make_executor
from relucut.errors import RelucutError
from relucut.frontier_search.config import FrontierConfig
from relucut.frontier_search.points import FrontierPoint, best_within, mark, markdown, to_csv
from relucut.frontier_search.pricing import check_latency_budgets, price, rounds
from relucut.models.registry import ModelSpec
from relucut.rundir import atomic_write_text, claim
from relucut.train.config import RUNTIME_FIELDS, TrainConfig

FORMAT = "relucut.frontier-search"
STAGE_ORDER = ("s3", "s2", "s4", "s1")  # DeepReShape's most -> least critical without a criticality pass


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


class _Search:
    def __init__(self, spec: ModelSpec, config: FrontierConfig, data: DataSplits, out: Path, base: TrainConfig,
                 progress: bool, console: Console, address: str | None):
        self.spec, self.config, self.data, self.out, self.base = spec, config, data, out, base
        self.progress, self.console = progress, console
        self.full = count(spec.build(), spec.input_size)
        # per frontier budget, the masked methods' ReLU budget; an unreachable latency is refused here
        self._relu_budgets = relu_budgets(spec, config, self.full)
        self.executor = make_executor(config.executor, address, progress=progress, data=data,
                                      cpus_per_job=config.cpus_per_job, gpus_per_job=config.gpus_per_job)
        self.teacher_dir = out / "teacher"
        self.order: list[str] | None = None  # DeepReDuce's culling order, least critical first
        self.points: list[FrontierPoint] = []
        self._test_acc: dict[str, float | None] = {}  # revealed only for the network chosen per budget

    # -- budgets ----------------------------------------------------------------------------------
    def relu_budgets(self) -> dict[float, int | None]:
        """Per frontier budget, the ReLU budget of the masked methods (None: it cannot meet it)."""
        return self._relu_budgets

    def mask_budgets(self) -> list[int]:
        """Distinct ReLU budgets for SNL/SENet below the full network's count."""
        return sorted({b for b in self.relu_budgets().values() if b is not None and b < self.full.relus})

    # -- runs ---------------------------------------------------------------------------------------
    def teacher(self) -> dict[str, Any]:
        from relucut.deepreduce.executors import TrainJob

        job = TrainJob("teacher (full ReLU)", dataclasses.replace(self.base, plan=None, teacher=None), self.teacher_dir)
        final = self.executor.run([job], lambda *_: None)[job.key]
        self._add_engine_point("teacher", "teacher", "all ReLUs", self.teacher_dir, final)
        return final

    def deepreduce(self) -> None:
        from relucut.deepreduce.search import Search, SearchSettings

        base = self.base
        if self.config.init == "teacher":  # ReLUs removed, weights kept
            base = dataclasses.replace(base, init=str(self.teacher_dir.resolve()))
        settings = SearchSettings.from_base(base, criticality_epochs=self.config.criticality_epochs,
                                            criticality_without_kd=False, teacher=str(self.teacher_dir.resolve()),
                                            one_block=self.config.one_block)
        search = Search(settings, self.out / "deepreduce", self.executor, self.console)
        budget = None  # latency budgets: every candidate (a MAC-light one may fit where ReLU counts say not)
        if self.config.latency_budgets is None:
            budget = max(self.config.budgets)
            if budget < search.smallest_reachable():
                self.console.print(f"note: no DeepReDuce network fits {budget:,} ReLUs; skipping DeepReDuce")
                return
        outcome = search.run(budget)
        self.order = list(outcome.criticality.order)
        for r in outcome.results:
            run_dir = self.out / "deepreduce" / r.run_dir
            self._add_engine_point("deepreduce", f"deepreduce/{r.name}", r.network_label(), run_dir,
                                   {"best_val_acc": r.val_acc, "test_acc": r.test_acc})

    def deepreshape(self) -> None:
        from relucut.deepreshape.pipeline import DeepReShapeConfig, design_job, design_label

        stages = [s for s in self.full.stage_names if s != "stem"]
        if stages != ["s1", "s2", "s3", "s4"]:
            self.console.print(f"note: DeepReShape designs four-stage ResNets; {self.spec.name} has stages "
                               f"{', '.join(stages)}, skipping it", highlight=False)
            return
        order = list(reversed(self.order)) if self.order else list(STAGE_ORDER)  # most critical first
        min_width = min(16, int(self.spec.kwargs.get("base_width", 16)))
        jobs, designs = [], []
        for budget in sorted({b for b in self.relu_budgets().values() if b is not None}):
            cfg = DeepReShapeConfig(budget=budget, equalized=self.config.equalized, order=order, min_width=min_width)
            try:
                design, job = design_job(self.spec, cfg, self.base, self.teacher_dir,
                                         self.out / "deepreshape" / str(budget))
            except RelucutError as exc:
                self.console.print(f"note: no DeepReShape design for {budget:,} ReLUs ({exc})", highlight=False)
                continue
            jobs.append(job)
            designs.append(design)
        finals = self.executor.run(jobs, lambda *_: None)
        for job, design in zip(jobs, designs):
            self._add_engine_point("deepreshape", f"deepreshape/{design.budget}", design_label(design), job.run_dir,
                                   finals[job.key], budget=design.budget)

    def masked(self, method: str, budget: int) -> None:
        """SNL or SENet from the teacher to exactly ``budget`` ReLUs (SENet + shallow: at most)."""
        from relucut.finegrained.pipeline import run_senet, run_snl

        run_dir = self.out / method / str(budget)
        if method.startswith("snl"):
            cfg = dataclasses.replace(self.config.snl, budget=budget,
                                      granularity="channel" if method == "snl-channel" else "pixel")
            result = run_snl(self.spec, self.data, run_dir, cfg, base=self.base, teacher=self.teacher_dir,
                             progress=self.progress)
        else:
            cfg = dataclasses.replace(self.config.senet, budget=budget, shallow=method == "senet-shallow")
            result = run_senet(self.spec, self.data, run_dir, cfg, base=self.base, teacher=self.teacher_dir,
                               progress=self.progress)
        row = result["result"]
        label = f"{method} masks to {budget:,}"
        if result.get("shallow_blocks"):
            label += f", shallow {'+'.join(result['shallow_blocks'])}"
        self._add_point(method, f"{method}/{budget}", label, run_dir, run_dir / "export", row["val_acc"],
                        row.get("test_acc"), budget=budget)

    # -- points -----------------------------------------------------------------------------------
    def _add_engine_point(self, method: str, name: str, label: str, run_dir: Path, final: dict[str, Any],
                          budget: int | None = None) -> None:
        """A finished engine run, exported once (reused on a rerun: the run never trains again);
        the ONNX file is added only for the networks the search ends with (see ``_finish_exports``)."""
        from relucut.export import export_run
        from relucut.recipe import is_export_dir

        export_dir = run_dir / "export"
        if not is_export_dir(export_dir):
            export_run(run_dir, export_dir, onnx=False)
        self._add_point(method, name, label, run_dir, export_dir, final.get("best_val_acc"), final.get("test_acc"),
                        budget=budget)

    def _add_point(self, method: str, name: str, label: str, run_dir: Path, export_dir: Path,
                   val_acc: float | None, test_acc: float | None, budget: int | None = None) -> None:
        from relucut.export import load_export

        if val_acc is None:
            raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
        model = load_export(export_dir)  # the priced network is the exported one
        report = count(model, model.relucut_recipe.model.input_size)
        est = price(report, self.config)
        point = FrontierPoint(
            method=method, name=name, plan=label, relus=report.relus, relu_layers=est.relu_layers, macs=report.macs,
            conv_depth=report.conv_depth, val_acc=float(val_acc), run_dir=str(run_dir.relative_to(self.out)),
            export_dir=str(export_dir.relative_to(self.out)), budget=budget, online_s=est.online_s,
            total_s=est.total_s, online_bytes=est.online_bytes, total_bytes=est.total_bytes, rounds=rounds(est),
        )
        self._test_acc[name] = test_acc
        self.points.append(point)

    # -- the whole search ---------------------------------------------------------------------------
    def run(self) -> FrontierResult:
        methods = self.config.methods
        coarse = [m for m in methods if m in ("deepreduce", "deepreshape")]
        masked = [m for m in methods if m.startswith(("snl", "senet"))]
        steps = [(m, m, self.deepreduce if m == "deepreduce" else self.deepreshape) for m in coarse]
        # budget by budget, so a search cut short has whole budgets
        steps += [(m, f"budget {b:,}: {m}", lambda b=b, m=m: self.masked(m, b))
                  for b in self.mask_budgets() for m in masked]
        jobs = _Jobs(["teacher", *(kind for kind, _, _ in steps)], self.console)
        jobs.run("teacher", "teacher: the full-ReLU network", self.teacher)
        titles = {"deepreduce": "deepreduce: criticality and the candidates under the budgets",
                  "deepreshape": "deepreshape: one HybReNet design per budget"}
        for kind, what, work in steps:
            jobs.run(kind, titles.get(what, what), work)
        return self.finish()

    def finish(self) -> FrontierResult:
        key = self.config.cost_key
        relu_budgets = self.relu_budgets()
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
        meta = {"format": FORMAT, "version": 1, "title": title, "model": self.spec.to_dict(),
                "dataset": self.base.dataset, "engine": self.config.engine, "cost": key,
                "selection": "validation accuracy", "budgets": self.config.budget_list(),
                "mask_relu_budgets": {f"{b:g}": r for b, r in relu_budgets.items()},
                "methods": self.config.methods, "criticality_order": self.order}
        rows = [p.to_dict() for p in self.points]
        atomic_write_text(self.out / "frontier.json", json.dumps({**meta, "points": rows}, indent=1))
        atomic_write_text(self.out / "frontier.csv", to_csv(self.points))
        atomic_write_text(self.out / "frontier.md", markdown(self.points, picks, key, self.config.engine, title)
                          + _commands(front, self.config))
        from relucut.frontier_search.plot import plot

        plot(self.points, self.out / "frontier.png", title, self.config.engine)
        return FrontierResult(self.points, front, picks, self.out)

    def _finish_exports(self, points: list[FrontierPoint]) -> None:
        """The frontier's and the picks' exports get their model.onnx, re-exported from the same
        run; the rebuilt network must count and price as the point says."""
        from relucut.export import export_run, load_export

        for p in {p.name: p for p in points}.values():
            export_dir = self.out / p.export_dir
            if (export_dir / "model.onnx").is_file():
                continue
            export_run(self.out / p.run_dir, export_dir)
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


def _commands(front: list[FrontierPoint], config: FrontierConfig) -> str:
    lines = ["", "Each network is exported (recipe.json, model.pt, model.onnx; paths relative to this folder); price or measure one with:", ""]
    for p in front:
        lines.append(f"    relucut pi estimate {p.export_dir} --protocol {config.engine}   # {p.method}: {p.plan}")
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


def settings_record(spec: ModelSpec, config: FrontierConfig, base: TrainConfig) -> dict[str, Any]:
    """What the runs compute. Budgets, methods, engine, objective and measuring only change what is
    reported, so a rerun with others reuses the runs that exist."""
    reporting = ("budgets", "latency_budgets", "methods", "objective", "engine", "bandwidth_bps", "rtt_s",
                 "threads", "executor", "cpus_per_job", "gpus_per_job", "measure")
    frontier = {k: v for k, v in config.to_dict().items() if k not in reporting}
    train = {k: v for k, v in base.to_dict().items() if k not in RUNTIME_FIELDS}
    return {"format": FORMAT, "version": 1, "model": spec.to_dict(), "frontier": frontier, "train": train}


def frontier(spec: ModelSpec, config: FrontierConfig, *, data: DataSplits, out: str | Path,
             train: TrainConfig | None = None, progress: bool = True, console: Console | None = None,
             address: str | None = None) -> FrontierResult:
    """The cross-method frontier of ``spec`` on ``data`` into ``out`` (resumable: rerun the same call).

    ``train``: the base recipe (a ``TrainConfig``; the engine's defaults otherwise) for the teacher,
    DeepReDuce's candidates and DeepReShape's designs; SNL and SENet use ``config.snl`` / ``config.senet``."""
    from relucut.finegrained.pipeline import base_config

    config.check()
    base = base_config(spec, data, train)
    if not len(data.val):
        raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
    out = Path(out)
    search = _Search(spec, config, data, out, base, progress, console or Console(), address)  # checks budgets
    with claim(out, settings_record(spec, config, base)):
        return search.run()
