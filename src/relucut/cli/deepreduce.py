"""``relucut criticality`` and ``relucut deepreduce``: DeepReDuce from the command line."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app
from relucut.cli.options import (
    AddressOpt,
    BatchOpt,
    CpusOpt,
    CritEpochsOpt,
    DataDirOpt,
    DeviceOpt,
    ExecutorOpt,
    LimitTrainOpt,
    LrOpt,
    ModelOptions,
    QuietOpt,
    SeedOpt,
    ThinStyleOpt,
    ValFractionOpt,
    absolute,
    check_teacher,
    need_extra,
    with_model_options,
)
from relucut.errors import RelucutError

# piped output (CI logs, `| tee`) gets room for the frontier table instead of rich's 80 columns
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=140)

OutOpt = Annotated[str, typer.Option("--out", "-o", help="Search directory; rerun the same command to resume.")]
TeacherOpt = Annotated[str | None, typer.Option("--teacher", help="A trained full-ReLU run dir or checkpoint (else one is trained).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Epochs for the teacher and every candidate.")]
KdOnlyOpt = Annotated[bool, typer.Option("--criticality-kd-only", help="Skip the stage networks without KD (C_k uses the KD ones).")]
ScheduleOpt = Annotated[str, typer.Option("--schedule", help="step | cosine | constant.")]
StepOpt = Annotated[Optional[int], typer.Option("--step-size", help="Step schedule: lr x 0.1 every N epochs (default: 30/60/90 of 120, at 50/75 % of shorter runs).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch CPU threads in this process.")]


@dataclass
class SearchOptions:
    """What a DeepReDuce command asks for beyond the model: the search's recipe, as given."""

    data_dir: str | None = None
    val_fraction: float = 0.1
    teacher: str | None = None
    criticality_file: str | None = None
    epochs: int = 120
    criticality_epochs: int | None = None
    kd_only: bool = False
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "step"
    step_size: int | None = None
    limit_train: int | None = None
    seed: int = 0
    device: str = "auto"
    one_block: bool = True
    thin_style: str = "post_add"
    rho_mode: str = "stride"

    def settings(self, model: ModelOptions):
        """The search's settings for ``model``, every input checked first (recipe, teacher,
        criticality file, data), so that a refused search writes nothing."""
        from relucut.data import check_available
        from relucut.deepreduce.search import SearchSettings

        if self.criticality_epochs is not None and self.criticality_epochs < 1:
            raise RelucutError(f"--criticality-epochs must be >= 1, got {self.criticality_epochs}")
        if self.rho_mode not in ("stride", "pool"):
            raise RelucutError(f"unknown --rho-mode '{self.rho_mode}'; use stride or pool")
        spec = model.spec()
        train = {"data_dir": absolute(self.data_dir), "val_fraction": self.val_fraction, "epochs": self.epochs,
                 "batch_size": self.batch_size, "lr": self.lr, "schedule": self.schedule,
                 "step_size": self.step_size, "limit_train": self.limit_train, "seed": self.seed}
        settings = SearchSettings(
            model=spec.to_dict(), dataset=model.dataset.lower(), train=train,
            criticality_epochs=self.criticality_epochs, criticality_without_kd=not self.kd_only,
            teacher=absolute(self.teacher), criticality_file=absolute(self.criticality_file),
            one_block=self.one_block, thin_style=self.thin_style, rho_mode=self.rho_mode, device=self.device,
        )
        settings.base_config()  # checks the training recipe's values
        if self.teacher:  # the search starts from the teacher and labels its row with this network
            check_teacher(self.teacher, spec, model.dataset, full_relu=True)
        if self.criticality_file:
            check_criticality_file(self.criticality_file, spec, model.dataset)
        check_available(model.dataset, self.data_dir)
        return settings


def check_criticality_file(path: str, spec, dataset: str) -> None:
    """Refuses a criticality order computed for another network or dataset: it would cull the
    wrong stages and label the frontier with the wrong network."""
    from relucut.deepreduce.criticality import CriticalityTable
    from relucut.models.registry import ModelSpec

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise RelucutError(f"criticality file '{path}' is missing or not JSON; make one with 'relucut criticality'") from None
    table = CriticalityTable.from_dict(data, str(path))
    theirs = ModelSpec.from_dict(dict(table.model))
    if theirs.to_dict() != spec.to_dict() or table.dataset != dataset.lower():
        raise RelucutError(f"criticality file '{path}' was computed for {_named(theirs)} on {table.dataset}, not for "
                           f"{_named(spec)} on {dataset.lower()}; compute it for this model with 'relucut criticality'")


def _named(spec) -> str:
    shape = ", ".join(f"{k}={v}" for k, v in sorted(spec.kwargs.items()))
    return f"{spec.name} ({shape})" if shape else spec.name


def warn_if_chance(accuracies, num_classes: int, what: str) -> None:
    """One warning line when no network learned (every validation accuracy below 1.5x chance):
    then the order of stages and the frontier only rank noise."""
    known = [a for a in accuracies if a is not None]
    if known and max(known) < 1.5 / num_classes:
        typer.echo(f"warning: every network is at chance accuracy (best val {100 * max(known):.1f}%, chance "
                   f"{100 / num_classes:.1f}%), so {what} noise; train longer (--epochs)", err=True)


def _executor(name: str, address: str | None, quiet: bool, cpus: int):
    from relucut.deepreduce.executors import make_executor

    return make_executor(name, address, progress=not quiet, cpus_per_job=cpus)


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise RelucutError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def print_frontier(results, title: str) -> None:
    from relucut.deepreduce.frontier import ratio_text, scale_text, stages_text

    table = Table(title=title, title_justify="left")
    for col in ("Culled", "Thinned", "Channel", "Fmap", "#ReLU", "Val acc %", "Test acc %", "Est. PI s",
                "Acc %/kReLU"):
        table.add_column(col, justify="left" if col in ("Culled", "Thinned") else "right")
    for r in results:
        table.add_row(
            stages_text(r.culled), stages_text(r.thinned, r.one_block), scale_text(r.alpha), scale_text(r.rho), f"{r.relus:,}",
            f"{100 * r.val_acc:.2f}", "-" if r.test_acc is None else f"{100 * r.test_acc:.2f}",
            "-" if r.est_latency_s is None else f"{r.est_latency_s:.3g}", ratio_text(100 * r.acc_per_krelu),
        )
    console.print(table)


def _report(outcome, num_classes: int) -> None:
    print_frontier(outcome.frontier, f"Pareto frontier ({len(outcome.frontier)} of {len(outcome.results)} "
                                     "candidates, chosen on validation accuracy; the stem is always culled)")
    console.print(f"wrote {outcome.out / 'frontier.json'}, frontier.csv, frontier.md, candidates.csv, pareto.png",
                  highlight=False)
    if outcome.best is not None:
        b = outcome.best
        console.print(f"[bold]best under the budget[/]: {b.name}  {b.relus:,} ReLUs  val {100 * b.val_acc:.2f}%"
                      + (f"  test {100 * b.test_acc:.2f}%" if b.test_acc is not None else "")
                      + f"  ({outcome.out / 'best.json'})", highlight=False)
    if outcome.frontier:
        pick = outcome.best or outcome.frontier[-1]
        console.print(f"export one for private inference: relucut export {outcome.out / pick.run_dir} "
                      f"--out {outcome.out / 'export' / pick.name}", highlight=False, soft_wrap=True)
    warn_if_chance([r.val_acc for r in outcome.results], num_classes, "the criticality order and the frontier are")


@app.command()
@with_model_options()
def criticality(
    model: ModelOptions,
    out: OutOpt,
    data_dir: DataDirOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    teacher: TeacherOpt = None,
    epochs: EpochsOpt = 120,
    criticality_epochs: CritEpochsOpt = None,
    kd_only: KdOnlyOpt = False,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    schedule: ScheduleOpt = "step",
    step_size: StepOpt = None,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    executor: ExecutorOpt = "sequential",
    address: AddressOpt = None,
    cpus_per_job: CpusOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Stage criticality (DeepReDuce Eq. 1): train a network with ReLUs in one stage only, per stage,
    with and without KD; writes OUT/criticality.json and .md (Table 1/3) and the culling order."""
    from relucut.deepreduce.search import Search

    _threads(threads)
    settings = SearchOptions(
        data_dir=data_dir, val_fraction=val_fraction, teacher=teacher, epochs=epochs,
        criticality_epochs=criticality_epochs, kd_only=kd_only, batch_size=batch_size, lr=lr, schedule=schedule,
        step_size=step_size, limit_train=limit_train, seed=seed, device=device,
    ).settings(model)
    search = Search(settings, out, _executor(executor, address, quiet, cpus_per_job), console)
    table = search.run_criticality()
    console.print(table.to_markdown(), highlight=False)
    console.print(f"wrote {Path(out) / 'criticality.json'} and criticality.md", highlight=False)
    warn_if_chance([row.val_acc_kd for row in table.stages], settings.spec().num_classes, "the criticality order is")


@app.command()
@with_model_options()
def deepreduce(
    model: ModelOptions,
    out: OutOpt,
    data_dir: DataDirOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    teacher: TeacherOpt = None,
    criticality_file: Annotated[str | None, typer.Option("--criticality", help="A saved criticality.json (else computed).")] = None,
    epochs: EpochsOpt = 120,
    criticality_epochs: CritEpochsOpt = None,
    kd_only: KdOnlyOpt = False,
    one_block: Annotated[bool, typer.Option("--one-block/--no-one-block", help="Add the S* (one block per ReLU stage) candidates.")] = True,
    thin_style: ThinStyleOpt = "post_add",
    rho_mode: Annotated[str, typer.Option("--rho-mode", help="How rho candidates lower the resolution: stride (a "
                                          "strided stem conv, the authors' zoo) or pool (average-pool the input).")] = "stride",
    budget: Annotated[str | None, typer.Option("--budget", help="Train only what fits, and return the best network under this many ReLUs (50k, 1.5M).")] = None,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    schedule: ScheduleOpt = "step",
    step_size: StepOpt = None,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    executor: ExecutorOpt = "sequential",
    address: AddressOpt = None,
    cpus_per_job: CpusOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """DeepReDuce: teacher -> criticality -> culled/thinned/reshaped candidates trained with KD ->
    the ReLU-accuracy Pareto frontier (OUT/frontier.json, .csv, .md, pareto.png)."""
    from relucut.budgets import parse_budget
    from relucut.deepreduce.search import Search

    _threads(threads)
    need_extra("matplotlib", "plot", "the frontier's pareto.png")
    limit = parse_budget(budget) if budget is not None else None
    settings = SearchOptions(
        data_dir=data_dir, val_fraction=val_fraction, teacher=teacher, criticality_file=criticality_file,
        epochs=epochs, criticality_epochs=criticality_epochs, kd_only=kd_only, batch_size=batch_size, lr=lr,
        schedule=schedule, step_size=step_size, limit_train=limit_train, seed=seed, device=device,
        one_block=one_block, thin_style=thin_style, rho_mode=rho_mode,
    ).settings(model)
    search = Search(settings, out, _executor(executor, address, quiet, cpus_per_job), console)
    _report(search.run(budget=limit), settings.spec().num_classes)
