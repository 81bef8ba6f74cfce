"""``relucut reshape`` (ReLU equalization) and ``relucut deepreshape`` (the capacity–criticality pipeline)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app
from relucut.cli.app import err_console
from relucut.cli.options import (
    BatchOpt, DataDirOpt, DatasetOpt, EpochsOpt, JsonOpt, LimitTrainOpt, LrOpt, OutOpt, QuietOpt, ScheduleOpt, SeedOpt,
    parse_ints,
)
from relucut.errors import RelucutError
from relucut.presets import get_preset

console = Console()

OrderOpt = Annotated[str, typer.Option("--order", help="Stages from most to least critical, e.g. s3,s2,s4,s1.")]
ReshapeBlocksOpt = Annotated[Optional[str], typer.Option("--blocks", help="Blocks per stage (phi), e.g. 2,2,2,2.")]
MaxRatioOpt = Annotated[int, typer.Option("--max-ratio", help="Largest width ratio between consecutive stages.")]


def _blocks(text: str | None) -> list[int]:
    blocks = parse_ints(text, "--blocks") or [2, 2, 2, 2]
    if len(blocks) < 2 or any(b < 1 for b in blocks):
        raise RelucutError(f"--blocks needs at least two stages, each >= 1 block, got {text}")
    return blocks


def _row(cells: dict, stages: list[str]) -> list[str]:
    dist = cells["distribution"]
    return [cells["model"].removeprefix("hrn_"), f"{cells['relus']:,}", f"{cells['macs'] / 1e6:.1f}M",
            *(f"{dist[s]:.2f}%" for s in stages), "yes" if cells["order_holds_with_stem_in_s1"] else "no"]


@app.command()
def reshape(
    order: OrderOpt = "s3,s2,s4,s1",
    blocks: ReshapeBlocksOpt = None,
    max_ratio: MaxRatioOpt = 8,
    min_ratio: Annotated[int, typer.Option("--min-ratio", help="Smallest width ratio considered.")] = 1,
    base_width: Annotated[int, typer.Option("--base-width", help="First-stage width m of the reported designs.")] = 16,
    stem_in_s1: Annotated[bool, typer.Option("--stem-in-s1", help="Count the stem's ReLUs with s1 in the order.")] = False,
    dataset: DatasetOpt = "cifar100",
    as_json: JsonOpt = False,
) -> None:
    """ReLU equalization: HybReNet ratios (alpha, beta, gamma) that put the stages' ReLUs in ORDER.

    For each choice of the later ratios, the smallest alpha (fewest MACs) that satisfies every pair.
    """
    from relucut.deepreshape.describe import describe
    from relucut.deepreshape.equalize import parse_order, satisfies, solve, stage_units

    phi = _blocks(blocks)
    stage_order = parse_order(order, len(phi))
    if base_width < 1:
        raise RelucutError(f"--base-width must be >= 1, got {base_width}")
    preset = get_preset(dataset)
    designs = solve(stage_order, phi, max_ratio=max_ratio, min_ratio=min_ratio, stem_in_s1=stem_in_s1)
    rows = []
    for design in designs:
        row = describe(design.ratios, base_width, phi, preset.input_size, preset.num_classes)
        row["order_holds_with_stem_in_s1"] = satisfies(stage_units(design.ratios, phi, True), stage_order)
        rows.append(row)
    stages = [f"s{i + 1}" for i in range(len(phi))]
    result = {
        "order": [stages[i] for i in stage_order],
        "blocks": phi,
        "min_ratio": min_ratio,
        "max_ratio": max_ratio,
        "stem_in_s1": stem_in_s1,
        "base_width": base_width,
        "dataset": preset.name,
        "designs": rows,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"[bold]ReLU equalization[/] {' > '.join(s.upper() for s in result['order'])}  "
                  f"blocks {','.join(map(str, phi))}  m={base_width}  {preset.name}")
    table = Table("design", "ReLUs", "MACs", *(f"{s} %" for s in stages), "holds w/ stem")
    for row in rows:
        table.add_row(*_row(row, stages))
    console.print(table)
    console.print("stage shares count the stem inside s1, as the DeepReShape slides do")


@app.command()
def deepreshape(
    model: Annotated[str, typer.Argument(help="The ReLU-equalized HybReNet, e.g. hrn_5x5x3x ('relucut reshape').")],
    budget: Annotated[Optional[str], typer.Option("--budget", "-b", help="ReLU budgets, e.g. 12k,25k,50k,100k.")] = None,
    budgets: Annotated[Optional[str], typer.Option("--budgets", hidden=True, help="Old name of --budget.")] = None,
    dataset: DatasetOpt = "cifar10",
    data_dir: DataDirOpt = None,
    order: OrderOpt = "s3,s2,s4,s1",
    blocks: ReshapeBlocksOpt = None,
    min_width: Annotated[int, typer.Option("--min-width", help="Below this m, switch from widening to culling.")] = 16,
    baseline: Annotated[str, typer.Option("--baseline", help="The plain network compared at each budget.")] = "hrn_2x2x2x",
    epochs: EpochsOpt = 120,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    schedule: ScheduleOpt = "cosine",
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    fine_grained: Annotated[bool, typer.Option(
        "--fine-grained", help="Low budgets: SNL pixel masks on the design's network to exactly the budget, "
        "instead of culling/thinning.")] = False,
    design_only: Annotated[bool, typer.Option("--design-only", help="Print the designs; train nothing.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capacity–criticality trade-off: per ReLU budget, a HybReNet design next to the plain ResNet18.

    High budgets widen MODEL (raise m); low ones cull/thin a least-critical-heavy HybReNet (or, with
    --fine-grained, mask it with SNL to exactly the budget). With training, reports accuracy too.
    """
    from relucut.budgets import parse_budgets
    from relucut.deepreshape.equalize import parse_order
    from relucut.deepreshape.pipeline import PipelineSettings, designs, summary_rows, train_designs
    from relucut.models.hybrenet import parse_hrn_name

    if budgets is not None:
        err_console.print("note: --budgets is now --budget; the old name goes in the next release", highlight=False)
    budget = budget or budgets
    if budget is None:
        raise RelucutError("give the ReLU budgets, e.g. --budget 12k,25k,50k")
    phi = _blocks(blocks)
    parse_hrn_name(model)
    parse_hrn_name(baseline)
    preset = get_preset(dataset)
    settings = PipelineSettings(
        model=model, budgets=parse_budgets(budget, "--budget"), order=list(parse_order(order, len(phi))), blocks=phi,
        min_width=min_width, baseline=baseline, input_size=preset.input_size, num_classes=preset.num_classes,
        fine_grained=fine_grained,
    )
    if design_only:
        rows = [{"role": role, **d.to_dict()} for per in designs(settings) for role, d in per.items()]
    else:
        from relucut.train import TrainConfig

        config = TrainConfig(dataset=preset.name, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                             schedule=schedule, limit_train=limit_train, seed=seed)
        config.resolved()  # checks the recipe before any design is built
        from relucut.data import load_dataset

        data = load_dataset(preset.name, data_dir, val_fraction=config.val_fraction, seed=seed)
        from relucut.methods.snl import SNLConfig

        def snl_config(budget: int, epochs: int) -> SNLConfig:  # low budgets with --fine-grained
            return SNLConfig(budget=budget, granularity="pixel", search_epochs=epochs, finetune_epochs=epochs)

        rows = train_designs(settings, config, out or f"runs/deepreshape-{model}-{dataset.lower()}", data=data, progress=not (quiet or as_json), snl_config=snl_config)
    if as_json:
        typer.echo(json.dumps({"settings": settings.to_dict(), "results": rows}))
        return
    table = Table("budget", "network", "design", "ReLUs", "MACs", "acc %")
    for cells in summary_rows(rows):
        table.add_row(*cells)
    console.print(table)
