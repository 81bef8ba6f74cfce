"""``relucut frontier`` (one frontier across every registered method, priced under the user's
engine) and ``relucut demo``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app, err_console
from relucut.cli.options import (
    AddressOpt, BatchOpt, CpusOpt, CritEpochsOpt, DeviceOpt, EngineOpt, EpochsOpt, ExecutorOpt, GpusOpt,
    LimitTrainOpt, LrOpt, ModelOptions, OutOpt, PiThreadsOpt, QuietOpt, SeedOpt, TeacherOpt, ValFractionOpt,
    check_teacher, parse_names, with_model_options,
)
from relucut.errors import RelucutError

console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=150)

BudgetOpt = Annotated[Optional[str], typer.Option(
    "--budget", "-b", help="Budgets, comma-separated: ReLUs (12k,25k,50k), or with --objective latency online "
    "latencies with a unit (0.5s,1s).")]
BudgetsOld = Annotated[Optional[str], typer.Option("--budgets", hidden=True, help="Old name of --budget.")]
LatencyOpt = Annotated[Optional[str], typer.Option(
    "--latency-budget", help="Online latency budgets, e.g. 1.5s or 0.5s,1s (the same as --objective latency "
    "--budget ...).")]
MethodsOpt = Annotated[Optional[str], typer.Option(
    "--methods", help="A subset of the registered methods and variants, comma-separated (relucut methods; "
    "default: all).")]
ObjectiveOpt = Annotated[str, typer.Option("--objective", help="relus or latency: what the frontier and budgets measure.")]
BandwidthOpt = Annotated[Optional[str], typer.Option("--bandwidth", help="Link bandwidth with its unit, e.g. 1gbit "
                                                                        "(default: the engine's).")]
RttOpt = Annotated[Optional[str], typer.Option("--rtt", help="Round-trip time with its unit, e.g. 0.3ms (default: the "
                                                            "engine's).")]
MeasureOpt = Annotated[bool, typer.Option("--measure", help="Also run the frontier's networks under SPU (needs make spu-env).")]
FinetuneOpt = Annotated[Optional[int], typer.Option(
    "--finetune-epochs", help="The masked methods' fine-tuning epochs (default: --epochs).")]
SearchOpt = Annotated[Optional[int], typer.Option(
    "--search-epochs", help="The masked methods' mask search / learning epochs (default: a quarter of --epochs, "
    "at least 1).")]
InitOpt = Annotated[Optional[str], typer.Option("--init", help="DeepReDuce networks start from: scratch (default), or "
                                                               "the teacher's weights.")]
OneBlockOpt = Annotated[Optional[bool], typer.Option("--one-block/--no-one-block",
                                                     help="DeepReDuce's S* candidates (one block per ReLU stage) "
                                                          "[default: on].")]
SettingsOpt = Annotated[Optional[str], typer.Option(
    "--settings", help="A JSON file of per-method settings, {\"snl\": {\"kd_weight\": 0.5}, ...} (relucut methods "
    "--json lists every field).")]


def _budgets(budget: str | None, latency: str | None, objective: str) -> tuple[list[int], list[float] | None]:
    from relucut.budgets import parse_budgets, parse_latency_budgets

    if budget is None and latency is None:
        raise RelucutError("give budgets: ReLUs (--budget 12k,25k) or latencies (--latency-budget 1.5s)")
    if budget is not None and latency is not None:
        raise RelucutError("give --budget or --latency-budget, not both")
    if latency is not None:
        return [], parse_latency_budgets(latency)
    if objective == "latency":  # a bare number would silently be seconds
        return [], parse_latency_budgets(budget, "--budget")
    return parse_budgets(budget, "--budget"), None


def _settings_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RelucutError(f"cannot read the settings file '{path}' ({exc.__class__.__name__}); give a JSON object "
                           "of per-method settings") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RelucutError(f"'{path}' must hold one JSON object per method, e.g. {{\"snl\": {{\"kd_weight\": 0.5}}}}")
    return data


def frontier_config(budget: str | None, latency: str | None = None, methods: str | None = None, engine: str = "delphi",
                    objective: str = "relus", bandwidth: str | None = None, rtt: str | None = None,
                    pi_threads: int | None = None, measure: bool = False, finetune_epochs: int | None = None,
                    search_epochs: int | None = None, criticality_epochs: int | None = None, executor: str = "sequential",
                    init: str | None = None, cpus_per_job: int = 1, gpus_per_job: float | None = None,
                    one_block: bool | None = None, settings: str | None = None):
    """The options as a FrontierConfig, every value checked (nothing is written before this)."""
    from relucut.frontier_search import FrontierConfig
    from relucut.methods import frontier_entries
    from relucut.units import BITS_PER_S, SECONDS, parse_quantity

    relu_budgets, latency_budgets = _budgets(budget, latency, objective)
    per_method = _settings_file(settings)
    deepreduce = {k: v for k, v in {"criticality_epochs": criticality_epochs, "one_block": one_block,
                                    "init": init}.items() if v is not None}
    if deepreduce:
        from relucut.methods.deepreduce import DeepReDuceConfig

        per_method["deepreduce"] = {**DeepReDuceConfig.for_frontier(1, 1).to_dict(), **per_method.get("deepreduce", {}),
                                    **deepreduce}
    if methods is not None and not parse_names(methods):
        raise RelucutError("--methods is empty; pick from " + ", ".join(frontier_entries()))
    config = FrontierConfig(
        budgets=relu_budgets, latency_budgets=latency_budgets,
        methods=parse_names(methods) if methods is not None else frontier_entries(),
        objective=objective, engine=engine, measure=measure, executor=executor, cpus_per_job=cpus_per_job,
        gpus_per_job=gpus_per_job, search_epochs=search_epochs, finetune_epochs=finetune_epochs,
        bandwidth_bps=parse_quantity(bandwidth, BITS_PER_S, "--bandwidth", "1gbit", unit_required=True)
        if bandwidth else None,
        rtt_s=parse_quantity(rtt, SECONDS, "--rtt", "0.3ms", unit_required=True) if rtt is not None else None,
        threads=pi_threads, settings=per_method,
    )
    config.check()
    if measure:
        from relucut.pi.measure import spu_python

        spu_python()  # a missing SPU environment is refused before any training
    return config


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


def run_frontier(spec, config, base, out: Path, quiet: bool, address: str | None = None, teacher: str | None = None):
    from relucut.frontier_search import frontier
    from relucut.frontier_search.run import relu_budgets
    from relucut.train import load_data

    relu_budgets(spec, config)  # an unreachable latency budget is refused before the data loads
    data = load_data(base)
    result = frontier(spec, config, data=data, out=out, train=base, teacher=teacher, progress=not quiet,
                      console=console, address=address)
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
    budget: BudgetOpt = None,
    budgets: BudgetsOld = None,
    latency_budget: LatencyOpt = None,
    methods: MethodsOpt = None,
    engine: EngineOpt = "delphi",
    objective: ObjectiveOpt = "relus",
    bandwidth: BandwidthOpt = None,
    rtt: RttOpt = None,
    pi_threads: PiThreadsOpt = None,
    measure: MeasureOpt = False,
    epochs: EpochsOpt = 120,
    finetune_epochs: FinetuneOpt = None,
    search_epochs: SearchOpt = None,
    criticality_epochs: CritEpochsOpt = None,
    one_block: OneBlockOpt = None,
    init: InitOpt = None,
    settings: SettingsOpt = None,
    teacher: TeacherOpt = None,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    val_fraction: ValFractionOpt = 0.1,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "sequential",
    address: AddressOpt = None,
    cpus_per_job: CpusOpt = 1,
    gpus_per_job: GpusOpt = None,
    out: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Every registered method at each budget, the best per budget on validation, each network exported
    and priced under --engine. Rerun to resume; a rerun with more budgets or methods trains only what is new."""
    from relucut.train import TrainConfig

    if budgets is not None:
        err_console.print("note: --budgets is now --budget; the old name goes in the next release", highlight=False)
        budget = budget or budgets
    config = frontier_config(budget, latency_budget, methods, engine, objective, bandwidth, rtt, pi_threads, measure,
                             finetune_epochs, search_epochs, criticality_epochs, executor, init, cpus_per_job,
                             gpus_per_job, one_block, settings)
    spec = model.spec()
    if val_fraction <= 0:
        raise RelucutError("the frontier chooses networks on held-out images; use --val-fraction > 0")
    base = TrainConfig(model=spec, dataset=model.dataset, data_dir=model.data_dir, val_fraction=val_fraction,
                       seed=seed, limit_train=limit_train, epochs=epochs, batch_size=batch_size, lr=lr,
                       device=device).resolved()
    if teacher:  # every method starts from it and distills from it: it must be this network, all ReLUs
        check_teacher(teacher, spec, model.dataset, full_relu=True)
    folder = Path(out) if out else Path("runs") / f"frontier-{model.model.replace(':', '_')}-{model.dataset}"
    run_frontier(spec, config, base, folder, quiet, address, teacher)


DEMO_MODEL, DEMO_BASE_WIDTH = "resnet18", 8
DEMO_BUDGETS = "1k,3k"
# DeepReShape's HybReNets are shaped for 32x32 images: on 8x8 digits they are 20x the MACs and
# train to little, so the demo leaves them to `relucut frontier --methods ...,deepreshape`. Every
# other registered method is in (a test holds this to the registry); variants only where they are
# their own paper (senet-shallow: Making Models Shallow Again)
DEMO_METHODS = "deepreduce,snl,senet,senet-shallow,relupruner"


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Where the demo goes (rerun resumes).")] = "runs/demo",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per network.")] = 5,
    budget: Annotated[str, typer.Option("--budget", "-b", help="ReLU budgets, comma-separated.")] = DEMO_BUDGETS,
    quiet: Annotated[bool, typer.Option("--quiet/--progress", help="Per-epoch progress bars off (default).")] = True,
) -> None:
    """The cross-method frontier on the embedded digits data with a small ResNet18 (a few minutes on
    2 CPU cores): prints the table per budget and writes OUT/frontier.md and OUT/frontier.png."""
    import torch

    from relucut.cli.options import model_spec
    from relucut.train import TrainConfig

    torch.set_num_threads(1)  # tiny tensors: one thread beats several on a shared CPU
    spec = model_spec(DEMO_MODEL, "digits", base_width=DEMO_BASE_WIDTH)
    config = frontier_config(budget, methods=DEMO_METHODS, one_block=False)
    base = TrainConfig(model=spec, dataset="digits", val_fraction=0.1, seed=0, epochs=epochs,
                       batch_size=64, lr=0.05, schedule="cosine", device="cpu").resolved()
    console.print(f"[bold]relucut demo[/]: {DEMO_METHODS.replace(',', ', ')} on {DEMO_MODEL} (base width "
                  f"{DEMO_BASE_WIDTH}) / digits at {budget} ReLUs, {epochs} epochs per network, into {out} "
                  "(DeepReShape's 32x32 designs: relucut frontier --methods)", highlight=False)
    run_frontier(spec, config, base, Path(out), quiet)
