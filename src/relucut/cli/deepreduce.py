"""``relucut criticality``: DeepReDuce's stage criticality alone (``relucut deepreduce`` itself is
derived from DeepReDuce's registered config, ``relucut.cli.methods``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from relucut.cli.app import app
from relucut.cli.options import (
    AddressOpt, BatchOpt, CpusOpt, CritEpochsOpt, DataDirOpt, DeviceOpt, EpochsOpt, ExecutorOpt, LimitTrainOpt,
    LrOpt, ModelOptions, OutOpt, QuietOpt, ScheduleOpt, SeedOpt, StepOpt, TeacherOpt, ThreadsOpt, ValFractionOpt,
    with_model_options,
)

# piped output (CI logs, `| tee`) gets room for the frontier table instead of rich's 80 columns
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=140)


@app.command()
@with_model_options()
def criticality(
    model: ModelOptions,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    teacher: TeacherOpt = None,
    epochs: EpochsOpt = 120,
    criticality_epochs: CritEpochsOpt = None,
    kd_only: Annotated[bool, typer.Option("--criticality-kd-only",
                                          help="Skip the stage networks without KD (C_k uses the KD ones).")] = False,
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
    from relucut.cli.options import base_recipe, set_threads
    from relucut.data import check_available
    from relucut.deepreduce.frontier import chance_warning
    from relucut.deepreduce.search import Search
    from relucut.executors import make_executor
    from relucut.methods.deepreduce import DeepReDuceConfig

    spec = model.spec()
    config = DeepReDuceConfig(criticality_epochs=criticality_epochs, criticality_without_kd=not kd_only)
    config.check()
    given = {"epochs": epochs, "val_fraction": val_fraction, "seed": seed, "limit_train": limit_train,
             "batch_size": batch_size, "schedule": schedule, "step_size": step_size, "device": device, "lr": lr}
    model.data_dir = data_dir
    base = base_recipe(model, spec, given, lr_is_base=True)
    if teacher:
        from relucut.cli.options import check_teacher

        check_teacher(teacher, spec, model.dataset, full_relu=True)
    check_available(model.dataset, data_dir)
    if threads is not None:
        set_threads(threads)
    folder = Path(out) if out else Path("runs") / f"criticality-{model.model.replace(':', '_')}-{model.dataset.lower()}"
    search = Search(config, base, folder, teacher=Path(teacher).resolve() if teacher else None,
                    executor=make_executor(executor, address, progress=not quiet, cpus_per_job=cpus_per_job),
                    console=console)
    table = search.run_criticality()
    console.print(table.to_markdown(), highlight=False)
    console.print(f"wrote {folder / 'criticality.json'} and criticality.md", highlight=False)
    warning = chance_warning([row.val_acc_kd for row in table.stages], spec.num_classes, "the criticality order is")
    if warning:
        typer.echo(warning, err=True)
