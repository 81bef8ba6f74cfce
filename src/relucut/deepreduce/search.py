"""The DeepReDuce search: teacher -> stage criticality -> candidates trained with KD -> frontier.

Layout of the output directory (every training run is a resumable run dir of the engine):

    search.json              the resolved settings; a rerun must match them
    teacher/                 the full-ReLU network (unless --teacher names one)
    criticality/<stage>-kd/  ReLUs only in <stage>, KD from the teacher (and <stage>-nokd/)
    criticality.json / .md   Table 1/3 of the paper, and the culling order
    candidates/<name>/       one run per candidate
    frontier.json/.csv/.md, candidates.csv, pareto.png
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from relucut.cost import count
from relucut.deepreduce.candidates import (
    STEM,
    Candidate,
    cost_candidate,
    drop_identical,
    generate_candidates,
    relu_counts,
    stage_blocks_of,
)
from relucut.deepreduce.criticality import CriticalityTable, StageCriticality, stage_only_plan
from relucut.deepreduce.frontier import best_under_budget, candidate_point, row, write_frontier
from relucut.deepreduce.latency import estimate_latency_s
from relucut.deepreduce.plot import plot_frontier
from relucut.errors import RelucutError
from relucut.executors import Executor, SequentialExecutor, TrainJob
from relucut.models.registry import ModelSpec
from relucut.pareto import FrontierPoint
from relucut.rundir import atomic_write_json, Claim, atomic_write_text, claim, read_settings
from relucut.sites import find_sites
from relucut.train import TrainConfig, read_final
from relucut.train.base import teacher_record
from relucut.train.checkpoint import find_checkpoint
from relucut.train.config import RUNTIME_FIELDS as TRAIN_RUNTIME_FIELDS

SEARCH_FORMAT = "relucut.deepreduce"
SEARCH_VERSION = 2  # 2: the method's config, the whole base recipe and the teacher by content; 1: as given
# settings that change how a search runs, not what it computes: a rerun may change them (the
# teacher is compared by its checkpoint's digest, so a moved or copied folder resumes)
RUNTIME_SETTINGS = ("teacher.path", *(f"train.{k}" for k in TRAIN_RUNTIME_FIELDS))
# the base recipe's fields that each run sets itself
PER_RUN_FIELDS = ("model", "dataset", "plan", "teacher", "init")


@dataclass
class SearchOutcome:
    criticality: CriticalityTable
    results: list[FrontierPoint]
    frontier: list[FrontierPoint]
    best: FrontierPoint | None
    out: Path


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _pct(acc: float | None) -> float | None:
    return None if acc is None else 100.0 * float(acc)


def search_record(config: Any, base: TrainConfig, teacher: Path | None) -> dict[str, Any]:
    """search.json: what the search computes (a rerun must match it)."""
    train = {k: v for k, v in base.to_dict().items() if k not in PER_RUN_FIELDS}
    return {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "model": base.model.to_dict(),
            "dataset": base.dataset, "train": train, "deepreduce": config.search_settings(),
            "teacher": teacher_record(teacher)}


def upgrade_record(saved: dict[str, Any]) -> dict[str, Any]:
    """A version-1 search.json (the settings as the command gave them) in today's form."""
    if saved.get("version") != 1:
        return saved
    resolved = dict(saved.get("resolved_train_config") or {})
    teacher = saved.get("teacher")
    method = {k: saved.get(k) for k in ("criticality_epochs", "criticality_without_kd", "criticality_file",
                                         "one_block", "thin_style", "rho_mode")}
    method["init"] = "teacher" if resolved.get("init") else "scratch"
    return {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "model": saved.get("model"),
            "dataset": saved.get("dataset"), "train": {k: v for k, v in resolved.items() if k not in PER_RUN_FIELDS},
            "deepreduce": method, "teacher": teacher_record(Path(teacher)) if teacher else None}


class Search:
    """One DeepReDuce search in ``out``: ``run()`` for the frontier, ``run_criticality()`` for the
    criticality table alone. Every phase goes through ``executor`` as resumable training jobs."""

    def __init__(self, config: Any, base: TrainConfig, out: str | Path, teacher: Path | None = None,
                 executor: Executor | None = None, console: Console | None = None):
        """``config``: a ``relucut.methods.deepreduce.DeepReDuceConfig``; ``base``: the recipe every run
        starts from; ``teacher``: a trained full-ReLU run dir or checkpoint (None: trained in ``out``)."""
        config.check()
        self.config = config
        self.base = base.resolved()
        self.out = Path(out)
        self.teacher_given = Path(teacher) if teacher is not None else None
        self.executor = executor or SequentialExecutor()
        self.console = console or Console(quiet=True)
        self.spec: ModelSpec = self.base.model
        self.sites = find_sites(self.spec.build(), self.spec.input_size)
        self._reshape_noted = False
        self._caps: tuple[bool, list[str], bool] | None = None
        self._sites_by_shape: dict = {}  # relu_counts' traces, shared by budget checks

    # -- settings ---------------------------------------------------------------------------------
    def check_settings(self) -> Claim:
        """Claims ``out`` with search.json: writes it, or checks that an existing one matches (a rerun
        resumes it). The returned claim holds the folder's lock; release it when the search ends."""
        saved = read_settings(self.out, "search.json")
        if saved is not None and saved.get("version") == 1:  # written before version 2: compare in today's form
            atomic_write_json(self.out / "search.json", upgrade_record(saved))
        mine = search_record(self.config, self.base, self.teacher_given)
        return claim(self.out, mine, file="search.json", runtime=RUNTIME_SETTINGS)

    def _config(self, start: str | None = None, **changes: Any) -> TrainConfig:
        """The base recipe for one run; with ``init="teacher"`` it starts from ``start``'s weights (the
        teacher's: ReLUs removed, weights kept)."""
        if start is not None and self.config.init == "teacher":
            changes.setdefault("init", start)
        return dataclasses.replace(self.base, **changes)

    def _run_jobs(self, jobs: list[TrainJob]) -> dict[str, dict]:
        """Runs a phase of jobs, printing one line per finished job with the phase's progress."""
        done = 0

        def note(job: TrainJob, final: dict, skipped: bool) -> None:
            nonlocal done
            done += 1
            val, test = _pct(final.get("best_val_acc")), _pct(final.get("test_acc"))
            state = "done before" if skipped else "trained"
            test_text = f", test {test:.2f}%" if test is not None else ""
            val_text = f"val {val:.2f}%" if val is not None else "no validation split"
            self.console.print(f"  [{done}/{len(jobs)}] [green]{state}[/] {job.key}: {val_text}{test_text}",
                               highlight=False)

        return self.executor.run(jobs, note)

    # -- teacher ----------------------------------------------------------------------------------
    def teacher(self) -> tuple[str, dict]:
        """Path of the full-ReLU teacher and its final metrics (empty when not recorded)."""
        if self.teacher_given is not None:
            path = self.teacher_given
            find_checkpoint(path)  # a clear error when there is no checkpoint there
            final = read_final(path) if path.is_dir() else None
            return str(path.resolve()), final or {}
        job = TrainJob("teacher (full ReLU)", self._config(plan=None, teacher=None), self.out / "teacher")
        self.console.print("[bold]Teacher[/]: the full-ReLU network")
        final = self._run_jobs([job])[job.key]
        return str(job.run_dir.resolve()), final

    # -- criticality ------------------------------------------------------------------------------
    def stages(self) -> list[str]:
        return [s for s in self.sites.stage_names if s != STEM]

    def criticality(self, teacher: str, teacher_final: dict) -> CriticalityTable:
        if self.config.criticality_file:
            return self._load_criticality(Path(self.config.criticality_file))
        epochs = self.config.criticality_epochs or self.base.epochs
        jobs, kd_jobs = [], []
        for stage in self.stages():
            plan = stage_only_plan(self.sites, stage).to_dict()
            kd_jobs.append(TrainJob(f"criticality {stage} w/ KD", self._config(teacher, plan=plan, teacher=teacher,
                                    epochs=epochs), self.out / "criticality" / f"{stage}-kd"))
            if self.config.criticality_without_kd:
                jobs.append(TrainJob(f"criticality {stage} w/o KD", self._config(teacher, plan=plan, teacher=None,
                                     epochs=epochs), self.out / "criticality" / f"{stage}-nokd"))
        proxy = epochs < self.base.epochs
        self.console.print(f"[bold]Criticality[/]: {len(self.stages())} stage networks, "
                           f"{'proxy' if proxy else 'full'} schedule of {epochs} epochs")
        finals = self._run_jobs(kd_jobs + jobs)
        full_relus = self.sites
        rows = []
        for stage in self.stages():
            kd = finals[f"criticality {stage} w/ KD"]
            plain = finals.get(f"criticality {stage} w/o KD", {})
            if kd.get("best_val_acc") is None:
                raise RelucutError("criticality needs a validation split; set val_fraction above 0")
            rows.append(StageCriticality(
                stage, sum(s.numel for s in full_relus.in_stage(stage)),
                kd["best_val_acc"], kd.get("test_acc"), plain.get("best_val_acc"), plain.get("test_acc"),
            ))
        table = CriticalityTable.build(
            self.spec.to_dict(), self.base.dataset, rows, self.sites.stage_names,
            schedule={"epochs": epochs, "full_epochs": self.base.epochs, "proxy": proxy},
            teacher={"relus": sum(s.numel for s in self.sites), "val_acc": teacher_final.get("best_val_acc"),
                     "test_acc": teacher_final.get("test_acc"), "path": teacher},
        )
        self.save_criticality(table)
        return table

    def save_criticality(self, table: CriticalityTable) -> None:
        atomic_write_json(self.out / "criticality.json", table.to_dict())
        atomic_write_text(self.out / "criticality.md", table.to_markdown())

    def _load_criticality(self, path: Path) -> CriticalityTable:
        data = _json(path)
        if data is None:
            raise RelucutError(f"criticality file '{path}' is missing or not JSON; make one with 'relucut criticality'")
        table = CriticalityTable.from_dict(data, str(path))
        theirs = ModelSpec.from_dict(dict(table.model))
        if theirs.to_dict() != self.spec.to_dict() or table.dataset != self.base.dataset:
            raise RelucutError(f"criticality file '{path}' was computed for {_named(theirs)} on {table.dataset}, not "
                               f"for {_named(self.spec)} on {self.base.dataset}; compute it for this model with "
                               "'relucut criticality'")
        if sorted(table.order) != sorted(self.stages()):
            raise RelucutError(
                f"criticality file '{path}' orders stages {', '.join(table.order)}, but this model's are "
                f"{', '.join(self.stages())}; compute it for this model"
            )
        return table

    # -- candidates -------------------------------------------------------------------------------
    def _capabilities(self) -> tuple[bool, list[str]]:
        """(one-block variants possible, reshaping arguments the factory lacks, whether it takes
        rho_mode='stride'), probed once."""
        if self._caps is None:
            one_block = self.config.one_block and "blocks" in _blocks_kwarg(self.spec)
            missing = [key for key in ("alpha", "rho") if not _builds_with(self.spec, key, 0.5)]
            strided = "rho" not in missing and _builds_with(self.spec, "rho_mode", "stride")
            self._caps = (one_block, missing, strided)
        return self._caps

    def candidates(self, order: list[str]) -> list[Candidate]:
        one_block, missing, strided = self._capabilities()
        rho_mode = self.config.rho_mode if strided else "pool"  # a factory without rho_mode pools
        cands = generate_candidates(order, self.sites.stage_names, stage_blocks_of(self.sites), one_block=one_block,
                                    thin_style=self.config.thin_style, rho_mode=rho_mode)
        if missing and not self._reshape_noted:
            self._reshape_noted = True
            self.console.print(f"note: {self.spec.name} takes no {' or '.join(missing)} argument, so the search "
                               "skips that reshaping (give the factory alpha/rho to get those candidates)",
                               highlight=False)
        cands = [c for c in cands if all(getattr(c, key) == 1.0 for key in missing)]
        return drop_identical(cands, self.spec, self._sites_by_shape)  # none trained twice

    def smallest_reachable(self) -> int:
        """The fewest ReLUs any criticality order can reach: the last culling iteration's smallest."""
        stages = self.stages()
        smallest = None
        for last in stages:
            # the last iteration's networks (a thinned one equal to its culled parent is listed once)
            final_iteration = [c for c in self.candidates([s for s in stages if s != last] + [last])
                               if c.iteration == len(stages) - 1]
            # the most reshaped: alpha * rho^2 smallest (one-block variants count too)
            least = min(c.alpha * c.rho ** 2 for c in final_iteration)
            counts = relu_counts([c for c in final_iteration if c.alpha * c.rho ** 2 == least], self.spec,
                                 self._sites_by_shape)
            low = min(counts.values())
            smallest = low if smallest is None else min(smallest, low)
        return int(smallest)

    def train_candidates(self, cands: list[Candidate], teacher: str) -> list[FrontierPoint]:
        self.console.print(f"[bold]Candidates[/]: {len(cands)} networks, trained with KD")
        jobs, costs = [], {}
        for cand in cands:
            cost = cost_candidate(cand, self.spec)
            costs[cand.name] = cost
            cfg = self._config(teacher, model=cost.spec, plan=cost.plan, teacher=teacher)
            jobs.append(TrainJob(cand.name, cfg, self.out / "candidates" / cand.name))
        finals = self._run_jobs(jobs)
        results = []
        for cand in cands:
            cost, final = costs[cand.name], finals[cand.name]
            if final.get("best_val_acc") is None:
                raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
            results.append(candidate_point(
                cand, cost.relus, cost.report.macs, cost.report.params, final["best_val_acc"],
                final.get("test_acc"), estimate_latency_s(cost.report),
                str((self.out / "candidates" / cand.name).relative_to(self.out)), self.sites.stage_names,
            ))
        return results

    # -- the whole search -------------------------------------------------------------------------
    def run_criticality(self) -> CriticalityTable:
        with self.check_settings():
            teacher, teacher_final = self.teacher()
            return self.criticality(teacher, teacher_final)

    def run(self, budget: int | None = None) -> SearchOutcome:
        if self.config.criticality_file:  # a bad file is refused before any training
            self._load_criticality(Path(self.config.criticality_file))
        if budget is not None:  # refuse before writing or training anything
            _check_budget(budget, self.smallest_reachable())
        with self.check_settings():
            return self._search(budget)

    def _search(self, budget: int | None) -> SearchOutcome:
        teacher, teacher_final = self.teacher()
        table = self.criticality(teacher, teacher_final)
        self.console.print(table.to_markdown(), highlight=False)
        cands = self.candidates(table.order)
        counts = relu_counts(cands, self.spec, self._sites_by_shape)
        if budget is not None:
            _check_budget(budget, min(counts.values()))
            cands = [c for c in cands if counts[c.name] <= budget]  # only what the budget can use
        results = self.train_candidates(cands, teacher)
        title = f"{self.spec.name} on {self.base.dataset}"
        meta = {"title": title, "model": self.spec.to_dict(), "dataset": self.base.dataset,
                "criticality_order": table.order, "selection": "validation accuracy",
                "budget": budget, "teacher": table.teacher or {"path": teacher}}
        front = write_frontier(self.out, results, meta)
        teacher_point = None
        if teacher_final.get("best_val_acc") is not None:
            teacher_point = (sum(s.numel for s in self.sites), teacher_final["best_val_acc"])
        teacher_latency = estimate_latency_s(count(self.spec.build(), self.spec.input_size))
        plot_frontier(results, self.out / "pareto.png", f"DeepReDuce: {title}", teacher_point, teacher_latency)
        best = best_under_budget(results, budget) if budget is not None else None
        if best is not None:
            atomic_write_json(self.out / "best.json", {"budget": budget, **row(best)})
        return SearchOutcome(table, results, front, best, self.out)


def _named(spec: ModelSpec) -> str:
    shape = ", ".join(f"{k}={v}" for k, v in sorted(spec.kwargs.items()))
    return f"{spec.name} ({shape})" if shape else spec.name


def _check_budget(budget: int, smallest: int) -> None:
    if budget < smallest:
        raise RelucutError(f"no candidate fits a budget of {budget:,} ReLUs; the smallest reachable is "
                           f"{smallest:,} ReLUs; raise --budget to at least that")


def _builds_with(spec: ModelSpec, key: str, value: Any) -> bool:
    """Whether the model factory accepts ``key`` (alpha / rho reshaping, rho_mode)."""
    try:
        ModelSpec(spec.name, spec.num_classes, spec.in_chans, spec.image_size, {**spec.kwargs, key: value}).build()
        return True
    except RelucutError:
        return False


def _blocks_kwarg(spec: ModelSpec) -> set[str]:
    """{'blocks'} when the model builds with a per-stage ``blocks`` argument (ResNet family)."""
    try:
        probe = dict(spec.kwargs)
        model = spec.build()
        blocks = [len(getattr(model, s)) for s in getattr(model, "stage_names", ())[1:]]
        if not blocks:
            return set()
        probe["blocks"] = blocks
        ModelSpec(spec.name, spec.num_classes, spec.in_chans, spec.image_size, probe).build()
        return {"blocks"}
    except (RelucutError, TypeError, AttributeError):
        return set()


__all__ = ["Search", "SearchOutcome", "search_record"]
