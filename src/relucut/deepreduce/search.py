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
from dataclasses import dataclass, field
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
from relucut.deepreduce.executors import Executor, SequentialExecutor, TrainJob
from relucut.deepreduce.frontier import CandidateResult, best_under_budget, write_frontier
from relucut.deepreduce.latency import estimate_latency_s
from relucut.deepreduce.plot import plot_frontier
from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.models.resnet import RHO_MODES
from relucut.rundir import Claim, atomic_write_text, claim
from relucut.sites import find_sites
from relucut.train import TrainConfig, read_final
from relucut.train.checkpoint import find_checkpoint
from relucut.train.config import RUNTIME_FIELDS as TRAIN_RUNTIME_FIELDS

SEARCH_FORMAT = "relucut.deepreduce"
# settings that change how a search runs, not what it computes: a rerun may change them
# (the resolved recipe is derived from the rest, so it is recorded, not compared)
RUNTIME_SETTINGS = ("device", "resolved_train_config", *(f"train.{k}" for k in TRAIN_RUNTIME_FIELDS))


@dataclass
class SearchSettings:
    """What a DeepReDuce search computes. ``train`` holds TrainConfig fields shared by every run
    (epochs, lr, batch size, seed, limit_train, ...); ``criticality_epochs`` < epochs is a proxy."""

    model: dict[str, Any]
    dataset: str
    train: dict[str, Any] = field(default_factory=dict)
    criticality_epochs: int | None = None  # None: the same as train["epochs"]
    criticality_without_kd: bool = True  # also train the stage networks without KD (Table 1's W/o KD)
    teacher: str | None = None  # a trained full-ReLU run dir / checkpoint; None: train one
    criticality_file: str | None = None  # a saved criticality.json; None: compute it
    one_block: bool = True  # the S* (one block per ReLU stage) candidates, where the model allows
    thin_style: str = "post_add"  # thinning drops each block's post-add ReLU (the authors' zoo), or "inner"
    rho_mode: str = "stride"  # rho candidates: a strided stem conv (the zoo; measured ahead) or "pool" the input
    device: str = "auto"

    @classmethod
    def from_base(cls, base: TrainConfig, **fields: Any) -> SearchSettings:
        """Settings whose runs share ``base``'s recipe (its model, dataset and device included)."""
        train = {k: v for k, v in base.to_dict().items() if k not in ("model", "dataset", "device", "plan", "teacher")}
        return cls(model=base.model.to_dict(), dataset=base.dataset, train=train, device=base.device, **fields)

    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(dict(self.model))

    def base_config(self) -> TrainConfig:
        try:
            cfg = TrainConfig.from_dict({**self.train, "model": self.model, "dataset": self.dataset,
                                         "device": self.device})
        except TypeError as exc:
            raise RelucutError(f"bad training settings: {exc}") from None
        cfg.resolved()  # checks values early, before any training
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class SearchOutcome:
    criticality: CriticalityTable
    results: list[CandidateResult]
    frontier: list[CandidateResult]
    best: CandidateResult | None
    out: Path


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _pct(acc: float | None) -> float | None:
    return None if acc is None else 100.0 * float(acc)


class Search:
    """One DeepReDuce search in ``out``: ``run()`` for the frontier, ``run_criticality()`` for the
    criticality table alone. Every phase goes through ``executor`` as resumable training jobs."""

    def __init__(self, settings: SearchSettings, out: str | Path, executor: Executor | None = None,
                 console: Console | None = None):
        self.settings = settings
        self.out = Path(out)
        self.executor = executor or SequentialExecutor()
        self.console = console or Console()
        self.spec = settings.spec()
        self.base = settings.base_config()
        self.sites = find_sites(self.spec.build(), self.spec.input_size)
        self._reshape_noted = False
        self._caps: tuple[bool, list[str]] | None = None
        self._sites_by_shape: dict = {}  # relu_counts' traces, shared by budget checks

    # -- settings ---------------------------------------------------------------------------------
    def check_settings(self) -> Claim:
        """Claims ``out`` with search.json: writes it, or checks that an existing one matches (a rerun
        resumes it). The returned claim holds the folder's lock; release it when the search ends."""
        mine = {"format": SEARCH_FORMAT, "version": 1, **self.settings.to_dict(),
                # derived, for the record: the training recipe every run starts from (teacher, no plan)
                "resolved_train_config": self.base.resolved().to_dict()}
        return claim(self.out, mine, file="search.json", runtime=RUNTIME_SETTINGS)

    def _config(self, **changes: Any) -> TrainConfig:
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
        if self.settings.teacher:
            path = Path(self.settings.teacher)
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
        if self.settings.criticality_file:
            return self._load_criticality(Path(self.settings.criticality_file))
        epochs = self.settings.criticality_epochs or self.base.epochs
        jobs, kd_jobs = [], []
        for stage in self.stages():
            plan = stage_only_plan(self.sites, stage).to_dict()
            kd_jobs.append(TrainJob(f"criticality {stage} w/ KD", self._config(plan=plan, teacher=teacher,
                                    epochs=epochs), self.out / "criticality" / f"{stage}-kd"))
            if self.settings.criticality_without_kd:
                jobs.append(TrainJob(f"criticality {stage} w/o KD", self._config(plan=plan, teacher=None,
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
        atomic_write_text(self.out / "criticality.json", json.dumps(table.to_dict(), indent=1))
        atomic_write_text(self.out / "criticality.md", table.to_markdown())

    def _load_criticality(self, path: Path) -> CriticalityTable:
        data = _json(path)
        if data is None:
            raise RelucutError(f"criticality file '{path}' is missing or not JSON; make one with 'relucut criticality'")
        table = CriticalityTable.from_dict(data, str(path))
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
            one_block = self.settings.one_block and "blocks" in _blocks_kwarg(self.spec)
            missing = [key for key in ("alpha", "rho") if not _builds_with(self.spec, key, 0.5)]
            strided = "rho" not in missing and _builds_with(self.spec, "rho_mode", "stride")
            self._caps = (one_block, missing, strided)
        return self._caps

    def candidates(self, order: list[str]) -> list[Candidate]:
        one_block, missing, strided = self._capabilities()
        rho_mode = self.settings.rho_mode if strided else "pool"  # a factory without rho_mode pools
        cands = generate_candidates(order, self.sites.stage_names, stage_blocks_of(self.sites), one_block=one_block,
                                    thin_style=self.settings.thin_style, rho_mode=rho_mode)
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

    def train_candidates(self, cands: list[Candidate], teacher: str) -> list[CandidateResult]:
        self.console.print(f"[bold]Candidates[/]: {len(cands)} networks, trained with KD")
        jobs, costs = [], {}
        for cand in cands:
            cost = cost_candidate(cand, self.spec)
            costs[cand.name] = cost
            cfg = self._config(model=cost.spec, plan=cost.plan, teacher=teacher)
            jobs.append(TrainJob(cand.name, cfg, self.out / "candidates" / cand.name))
        finals = self._run_jobs(jobs)
        results = []
        for cand in cands:
            cost, final = costs[cand.name], finals[cand.name]
            if final.get("best_val_acc") is None:
                raise RelucutError("the frontier is chosen on validation accuracy; set val_fraction above 0")
            results.append(CandidateResult.of(
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
        if self.settings.criticality_file:  # a bad file is refused before any training
            self._load_criticality(Path(self.settings.criticality_file))
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
            atomic_write_text(self.out / "best.json", json.dumps({"budget": budget, **best.to_dict()}, indent=1))
        return SearchOutcome(table, results, front, best, self.out)


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


@dataclass
class DeepReDuceConfig:
    """``relucut.reduce`` with DeepReDuce: the search, then the most accurate network (validation)
    within ``budget`` (None: the most accurate of all) exported as the result."""

    budget: int | None = None
    criticality_epochs: int | None = None  # None: the base recipe's epochs
    criticality_without_kd: bool = True
    criticality_file: str | None = None
    one_block: bool = True
    thin_style: str = "post_add"  # or "inner": thinning keeps the post-add ReLU instead
    rho_mode: str = "stride"  # or "pool": rho candidates average-pool the input instead

    def check(self) -> None:
        if self.rho_mode not in RHO_MODES:
            raise RelucutError(f"unknown rho_mode '{self.rho_mode}'; use {' or '.join(RHO_MODES)}")
        if self.budget is not None and self.budget < 1:
            raise RelucutError(f"budget must be >= 1 ReLU, got {self.budget}")
        if self.criticality_epochs is not None and self.criticality_epochs < 1:
            raise RelucutError(f"criticality_epochs must be >= 1, got {self.criticality_epochs}")


def run_deepreduce(base: TrainConfig, out: str | Path, cfg: DeepReDuceConfig, *, teacher: str | Path | None = None,
                   data: Any = None, executor: Executor | None = None, console: Console | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """The search under ``out``, its pick exported to ``out/export``; returns (and writes) result.json.
    ``data``: the DataSplits to train on (else loaded by ``base``'s dataset fields)."""
    from relucut.export import export_run

    cfg.check()
    settings = SearchSettings.from_base(
        base, criticality_epochs=cfg.criticality_epochs, criticality_without_kd=cfg.criticality_without_kd,
        teacher=str(Path(teacher).resolve()) if teacher is not None else None,
        criticality_file=cfg.criticality_file, one_block=cfg.one_block, thin_style=cfg.thin_style,
        rho_mode=cfg.rho_mode)
    out = Path(out)
    executor = executor or SequentialExecutor(progress=progress, data=data)
    outcome = Search(settings, out, executor, console).run(cfg.budget)
    pick = outcome.best or max(outcome.results, key=lambda r: (r.val_acc, -r.relus))
    exported = export_run(out / pick.run_dir, out / "export")
    report = count(exported.model, exported.recipe.model.input_size)
    result = {"method": "deepreduce", "budget": cfg.budget, "network": pick.network_label(), "name": pick.name,
              "candidates": len(outcome.results), "criticality_order": outcome.criticality.order,
              "result": {"relus": report.relus, "val_acc": pick.val_acc, "test_acc": pick.test_acc,
                         "macs": report.macs, "conv_depth": report.conv_depth}}
    atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    return result


__all__ = ["DeepReDuceConfig", "Search", "SearchOutcome", "SearchSettings", "run_deepreduce"]
