"""``relucut frontier``: one frontier across every method, priced under the user's engine."""

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
    AddressOpt,
    BatchOpt,
    CpusOpt,
    CritEpochsOpt,
    DeviceOpt,
    ExecutorOpt,
    GpusOpt,
    LimitTrainOpt,
    LrOpt,
    ModelOptions,
    QuietOpt,
    SeedOpt,
    ValFractionOpt,
    parse_names,
    with_model_options,
)
from relucut.errors import RelucutError

console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=150)

BudgetsOpt = Annotated[Optional[str], typer.Option("--budgets", help="ReLU budgets, e.g. 12k,25k,50k,100k.")]
LatencyOpt = Annotated[Optional[str], typer.Option(
    "--latency-budget", help="Online latency budgets instead of ReLU budgets, e.g. 1.5s or 0.5s,1s.")]
MethodsOpt = Annotated[Optional[str], typer.Option(
    "--methods", help="A subset of deepreduce,deepreshape,snl,snl-channel,senet,senet-shallow (default: all).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="PI engine to price under: delphi, sci, cheetah, spu-cheetah.")]
ObjectiveOpt = Annotated[str, typer.Option("--objective", help="relus or latency: what the frontier and budgets measure.")]
BandwidthOpt = Annotated[Optional[str], typer.Option("--bandwidth", help="Link bandwidth, e.g. 1gbit (default: the engine's).")]
RttOpt = Annotated[Optional[str], typer.Option("--rtt", help="Round-trip time, e.g. 0.3ms (default: the engine's).")]
PiThreadsOpt = Annotated[Optional[int], typer.Option("--pi-threads", help="Threads of the 2PC engine (default: the engine's).")]
MeasureOpt = Annotated[bool, typer.Option("--measure", help="Also run the frontier's networks under SPU (needs make spu-env).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Epochs of the teacher, DeepReDuce candidates and DeepReShape designs.")]
FinetuneOpt = Annotated[Optional[int], typer.Option("--finetune-epochs", help="SNL/SENet KD fine-tuning epochs (default: --epochs).")]
SearchOpt = Annotated[Optional[int], typer.Option(
    "--search-epochs", help="SNL mask search / SENet mask learning epochs (default: a quarter of --epochs, at least 1).")]
InitOpt = Annotated[str, typer.Option("--init", help="DeepReDuce networks start from: scratch, or the teacher's weights.")]
OneBlockOpt = Annotated[bool, typer.Option("--one-block/--no-one-block", help="DeepReDuce's S* candidates (one block per ReLU stage).")]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder; rerun the same command to resume.")]


def frontier_config(budgets: str | None, latency: str | None, methods: str | None, engine: str, objective: str,
                    bandwidth: str | None, rtt: str | None, pi_threads: int | None, measure: bool, epochs: int,
                    finetune_epochs: int | None, search_epochs: int | None, criticality_epochs: int | None,
                    executor: str, init: str = "scratch", cpus_per_job: int = 1, gpus_per_job: float | None = None,
                    one_block: bool = True):
    """The options as a FrontierConfig, every value checked (nothing is written before this)."""
    from relucut.budgets import parse_budgets, parse_latency_budgets
    from relucut.finegrained.senet import SENetConfig
    from relucut.finegrained.snl import SNLConfig
    from relucut.frontier_search import METHODS, FrontierConfig
    from relucut.units import BITS_PER_S, SECONDS, parse_quantity

    if budgets is None and latency is None:
        raise RelucutError("give ReLU budgets (--budgets 12k,25k) or latency budgets (--latency-budget 1.5s)")
    if budgets is not None and latency is not None:
        raise RelucutError("give --budgets or --latency-budget, not both")
    if epochs < 1:
        raise RelucutError(f"--epochs must be >= 1, got {epochs}")
    finetune = epochs if finetune_epochs is None else finetune_epochs
    search = max(1, epochs // 4) if search_epochs is None else search_epochs
    config = FrontierConfig(
        budgets=parse_budgets(budgets) if budgets is not None else [],
        latency_budgets=parse_latency_budgets(latency) if latency is not None else None,
        methods=parse_names(methods) if methods is not None else list(METHODS),
        objective=objective, engine=engine, measure=measure, executor=executor, init=init,
        cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job,
        bandwidth_bps=parse_quantity(bandwidth, BITS_PER_S, "--bandwidth", "1gbit") if bandwidth else None,
        rtt_s=parse_quantity(rtt, SECONDS, "--rtt", "0.3ms") if rtt is not None else None,
        threads=pi_threads, criticality_epochs=criticality_epochs, one_block=one_block,
        snl=SNLConfig(budget=0, search_epochs=search, finetune_epochs=finetune, milestones=_scaled(finetune, SNL_DECAYS)),
        senet=SENetConfig(budget=0, mask_epochs=search, finetune_epochs=finetune,
                          milestones=_scaled(finetune, SENET_DECAYS)),
    )
    if methods is not None and not config.methods:
        raise RelucutError("--methods is empty; pick from " + ", ".join(METHODS))
    if pi_threads is not None and pi_threads < 1:
        raise RelucutError(f"--pi-threads must be >= 1, got {pi_threads}")
    config.check()
    if measure:
        from relucut.pi.measure import spu_python

        spu_python()  # a missing SPU environment is refused before any training
    return config


SNL_DECAYS = (0.5, 0.75)  # fine-tuning lr x 0.1 at these fractions of the epochs
SENET_DECAYS = (90 / 180, 140 / 180, 160 / 180)  # SENet's 90/140/160 of 180, scaled to the epochs


def _scaled(epochs: int, fractions: tuple[float, ...]) -> list[int]:
    return sorted({m for m in (round(epochs * f) for f in fractions) if 0 < m < epochs})


def _table(result, engine: str, cost_key: str) -> Table:
    table = Table(title=f"Chosen per budget (on validation accuracy), priced under {engine}", title_justify="left")
    for col in ("Budget", "Method", "Network", "#ReLU", "ReLU layers", "MACs", "Val %", "Test %", "Online s", "Online MB"):
        table.add_column(col, justify="left" if col in ("Method", "Network") else "right")
    for budget, p in result.picks.items():
        text = f"{budget:.3g} s" if cost_key != "relus" else f"{int(budget):,}"
        if p is None:
            table.add_row(text, "-", "nothing fits this budget", *[""] * 7)
            continue
        table.add_row(text, p.method, p.plan, f"{p.relus:,}", str(p.relu_layers), f"{p.macs / 1e6:.2f}M",
                      f"{100 * p.val_acc:.2f}", "-" if p.test_acc is None else f"{100 * p.test_acc:.2f}",
                      f"{p.online_s:.3g}", f"{p.online_bytes / 1e6:.3g}")
    return table


def run_frontier(spec, config, base, out: Path, quiet: bool, address: str | None = None):
    from relucut.frontier_search import frontier
    from relucut.frontier_search.run import relu_budgets
    from relucut.train import load_data

    relu_budgets(spec, config)  # an unreachable latency budget is refused before the data loads
    data = load_data(base)
    result = frontier(spec, config, data=data, out=out, train=base, progress=not quiet, console=console,
                      address=address)
    console.print(_table(result, config.engine, config.cost_key))
    on = ", ".join(f"{p.method} {p.relus:,}" for p in result.frontier)
    console.print(f"combined frontier ({len(result.frontier)} of {len(result.points)} networks): {on}", highlight=False)
    console.print(f"wrote {out / 'frontier.md'}, frontier.json, frontier.csv and frontier.png; "
                  "each network's export is listed in frontier.md", highlight=False)
    return result


@app.command()
@with_model_options(data_dir=True)
def frontier(
    model: ModelOptions,
    budgets: BudgetsOpt = None,
    latency_budget: LatencyOpt = None,
    methods: MethodsOpt = None,
    engine: EngineOpt = "delphi",
    objective: ObjectiveOpt = "relus",
    bandwidth: BandwidthOpt = None,
    rtt: RttOpt = None,
    pi_threads: PiThreadsOpt = None,
    measure: MeasureOpt = False,
    epochs: EpochsOpt = 20,
    finetune_epochs: FinetuneOpt = None,
    search_epochs: SearchOpt = None,
    criticality_epochs: CritEpochsOpt = None,
    one_block: OneBlockOpt = True,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    val_fraction: ValFractionOpt = 0.1,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    init: InitOpt = "scratch",
    executor: ExecutorOpt = "sequential",
    address: AddressOpt = None,
    cpus_per_job: CpusOpt = 1,
    gpus_per_job: GpusOpt = None,
    out: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Every method (DeepReDuce, DeepReShape, SNL, SENet, SENet + shallow) at each budget, the best
    per budget on validation, each network exported and priced under --engine. Rerun to resume."""
    from relucut.train import TrainConfig

    config = frontier_config(budgets, latency_budget, methods, engine, objective, bandwidth, rtt, pi_threads,
                             measure, epochs, finetune_epochs, search_epochs, criticality_epochs, executor, init,
                             cpus_per_job, gpus_per_job, one_block)
    spec = model.spec()
    if val_fraction <= 0:
        raise RelucutError("the frontier chooses networks on held-out images; use --val-fraction > 0")
    base = TrainConfig(model=spec, dataset=model.dataset, data_dir=model.data_dir, val_fraction=val_fraction,
                       seed=seed, limit_train=limit_train, epochs=epochs, batch_size=batch_size, lr=lr,
                       device=device).resolved()
    folder = Path(out) if out else Path("runs") / f"frontier-{model.model.replace(':', '_')}-{model.dataset}"
    run_frontier(spec, config, base, folder, quiet, address)


DEMO_MODEL, DEMO_BASE_WIDTH = "resnet18", 8
DEMO_BUDGETS = "1k,3k"
# DeepReShape's HybReNets are shaped for 32x32 images: on 8x8 digits they are 20x the MACs and
# train to little, so the demo leaves them to `relucut frontier --methods ...,deepreshape`
DEMO_METHODS = "deepreduce,snl,snl-channel,senet,senet-shallow"


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Where the demo goes (rerun resumes).")] = "runs/demo",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per network.")] = 5,
    quiet: Annotated[bool, typer.Option("--quiet/--progress", help="Per-epoch progress bars off (default).")] = True,
) -> None:
    """The cross-method frontier on the embedded digits data with a small ResNet18 (a few minutes on
    2 CPU cores): prints the table per budget and writes OUT/frontier.md and OUT/frontier.png."""
    import torch

    from relucut.cli.options import model_spec
    from relucut.train import TrainConfig

    torch.set_num_threads(1)  # tiny tensors: one thread beats several on a shared CPU
    spec = model_spec(DEMO_MODEL, "digits", base_width=DEMO_BASE_WIDTH)
    config = frontier_config(DEMO_BUDGETS, None, DEMO_METHODS, "delphi", "relus", None, None, None, False, epochs,
                             None, None, None, "sequential", one_block=False)
    base = TrainConfig(model=spec, dataset="digits", val_fraction=0.1, seed=0, epochs=epochs,
                       batch_size=64, lr=0.05, schedule="cosine", device="cpu").resolved()
    console.print(f"[bold]relucut demo[/]: {DEMO_METHODS.replace(',', ', ')} on {DEMO_MODEL} (base width "
                  f"{DEMO_BASE_WIDTH}) / digits at {DEMO_BUDGETS} ReLUs, {epochs} epochs per network, into {out} "
                  "(DeepReShape's 32x32 designs: relucut frontier --methods)", highlight=False)
    run_frontier(spec, config, base, Path(out), quiet)
