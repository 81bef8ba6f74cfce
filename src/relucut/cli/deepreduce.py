"""``relucut criticality``, ``relucut deepreduce`` and ``relucut demo``: DeepReDuce from the command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app
from relucut.cli.options import (
    AlphaOpt,
    BaseWidthOpt,
    BlocksOpt,
    DatasetOpt,
    DeviceOpt,
    ModelArg,
    NumClassesOpt,
    RhoOpt,
    WidthsOpt,
    model_spec,
)
from relucut.errors import RelucutError

# piped output (CI logs, `| tee`) gets room for the frontier table instead of rich's 80 columns
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=140)

OutOpt = Annotated[str, typer.Option("--out", "-o", help="Search directory; rerun the same command to resume.")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Folder (or archive) with the dataset's files.")]
ValFractionOpt = Annotated[float, typer.Option("--val-fraction", help="Share of the training set held out for selection.")]
TeacherOpt = Annotated[str | None, typer.Option("--teacher", help="A trained full-ReLU run dir or checkpoint (else one is trained).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Epochs for the teacher and every candidate.")]
CritEpochsOpt = Annotated[int | None, typer.Option("--criticality-epochs", help="Fewer epochs for the stage networks: a proxy schedule (recorded).")]
KdOnlyOpt = Annotated[bool, typer.Option("--criticality-kd-only", help="Skip the stage networks without KD (C_k uses the KD ones).")]
BatchOpt = Annotated[int, typer.Option("--batch-size")]
LrOpt = Annotated[float, typer.Option("--lr", help="Initial learning rate (SGD).")]
ScheduleOpt = Annotated[str, typer.Option("--schedule", help="step | cosine | constant.")]
StepOpt = Annotated[Optional[int], typer.Option("--step-size", help="Step schedule: lr x 0.1 every N epochs (default: at 25/50/75 % of the epochs).")]
LimitOpt = Annotated[int | None, typer.Option("--limit-train", help="Train on the first N training images only.")]
SeedOpt = Annotated[int, typer.Option("--seed")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch CPU threads in this process.")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="sequential | ray (one job per worker, a GPU each if any).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: start a local Ray).")]
CpusOpt = Annotated[int, typer.Option("--cpus-per-job", help="Ray: CPUs (and torch threads) per training job.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress bars.")]


def _settings(spec, dataset, data_dir, val_fraction, teacher, criticality_file, epochs, criticality_epochs,
              kd_only, batch_size, lr, schedule, step_size, limit_train, seed, device, one_block=True):
    from relucut.deepreduce.search import SearchSettings

    if criticality_epochs is not None and criticality_epochs < 1:
        raise RelucutError(f"--criticality-epochs must be >= 1, got {criticality_epochs}")
    train = {"data_dir": str(Path(data_dir).resolve()) if data_dir else None, "val_fraction": val_fraction,
             "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule, "step_size": step_size,
             "limit_train": limit_train, "seed": seed}
    return SearchSettings(
        model=spec.to_dict(), dataset=dataset, train=train, criticality_epochs=criticality_epochs,
        criticality_without_kd=not kd_only, teacher=str(Path(teacher).resolve()) if teacher else None,
        criticality_file=str(Path(criticality_file).resolve()) if criticality_file else None,
        one_block=one_block, device=device,
    )


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


def _report(outcome) -> None:
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


@app.command()
def criticality(
    model: ModelArg,
    out: OutOpt,
    dataset: DatasetOpt = "cifar10",
    num_classes: NumClassesOpt = None,
    base_width: BaseWidthOpt = None,
    widths: WidthsOpt = None,
    blocks: BlocksOpt = None,
    alpha: AlphaOpt = None,
    rho: RhoOpt = None,
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
    limit_train: LimitOpt = None,
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
    spec = model_spec(model, dataset, num_classes, base_width, widths, blocks, alpha, rho)
    settings = _settings(spec, dataset, data_dir, val_fraction, teacher, None, epochs, criticality_epochs,
                         kd_only, batch_size, lr, schedule, step_size, limit_train, seed, device)
    search = Search(settings, out, _executor(executor, address, quiet, cpus_per_job), console)
    table = search.run_criticality()
    console.print(table.to_markdown(), highlight=False)
    console.print(f"wrote {Path(out) / 'criticality.json'} and criticality.md", highlight=False)


@app.command()
def deepreduce(
    model: ModelArg,
    out: OutOpt,
    dataset: DatasetOpt = "cifar10",
    num_classes: NumClassesOpt = None,
    base_width: BaseWidthOpt = None,
    widths: WidthsOpt = None,
    blocks: BlocksOpt = None,
    alpha: AlphaOpt = None,
    rho: RhoOpt = None,
    data_dir: DataDirOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    teacher: TeacherOpt = None,
    criticality_file: Annotated[str | None, typer.Option("--criticality", help="A saved criticality.json (else computed).")] = None,
    epochs: EpochsOpt = 120,
    criticality_epochs: CritEpochsOpt = None,
    kd_only: KdOnlyOpt = False,
    one_block: Annotated[bool, typer.Option("--one-block/--no-one-block", help="Add the S* (one block per ReLU stage) candidates.")] = True,
    budget: Annotated[str | None, typer.Option("--budget", help="Train only what fits, and return the best network under this many ReLUs (50k, 1.5M).")] = None,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    schedule: ScheduleOpt = "step",
    step_size: StepOpt = None,
    limit_train: LimitOpt = None,
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
    limit = parse_budget(budget) if budget is not None else None
    spec = model_spec(model, dataset, num_classes, base_width, widths, blocks, alpha, rho)
    settings = _settings(spec, dataset, data_dir, val_fraction, teacher, criticality_file, epochs,
                         criticality_epochs, kd_only, batch_size, lr, schedule, step_size, limit_train, seed,
                         device, one_block)
    search = Search(settings, out, _executor(executor, address, quiet, cpus_per_job), console)
    _report(search.run(budget=limit))


DEMO_MODEL = "resnet18"
DEMO_BASE_WIDTH = 8


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Where the demo search goes (rerun resumes).")] = "runs/demo",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per network.")] = 12,
    executor: ExecutorOpt = "sequential",
    quiet: Annotated[bool, typer.Option("--quiet/--progress", help="Per-epoch progress bars off (default).")] = True,
) -> None:
    """DeepReDuce end to end on the embedded digits data with a small ResNet18 (a few minutes on 2 CPU
    cores): prints the criticality table and the Pareto frontier, and writes OUT/pareto.png."""
    from relucut.deepreduce.search import Search

    _threads(1)  # tiny tensors: one thread beats several on a shared CPU
    spec = model_spec(DEMO_MODEL, "digits", base_width=DEMO_BASE_WIDTH)
    settings = _settings(spec, "digits", None, 0.1, None, None, epochs, None, False, 64, 0.05, "cosine", 30,
                         None, 0, "cpu")
    console.print(f"[bold]relucut demo[/]: DeepReDuce on {DEMO_MODEL} (base width {DEMO_BASE_WIDTH}) / digits, "
                  f"{epochs} epochs per network, into {out}", highlight=False)
    outcome = Search(settings, out, _executor(executor, None, quiet, 1), console).run()
    _report(outcome)
