"""``relucut export``: write a physically reduced network (recipe + state_dict + ONNX)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from relucut.cli.app import app
from relucut.cli.options import (
    AlphaOpt,
    BaseWidthOpt,
    BlocksOpt,
    CullOpt,
    DatasetOpt,
    JsonOpt,
    ModelArg,
    NumClassesOpt,
    RhoOpt,
    ThinOpt,
    WidthsOpt,
    model_spec,
    resolve_plan,
)
from relucut.errors import RelucutError
from relucut.export import export_model, load_checkpoint

console = Console()


@app.command()
def export(
    model: ModelArg,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory to write recipe.json, model.pt, model.onnx.")],
    plan: Annotated[str | None, typer.Option("--plan", help="The ReLU plan JSON to export under.")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", help="Weights of the plan-applied model (a state_dict, or a dict with 'model'); "
        "without it, fresh weights from --seed.")] = None,
    dataset: DatasetOpt = "cifar10",
    num_classes: NumClassesOpt = None,
    base_width: BaseWidthOpt = None,
    widths: WidthsOpt = None,
    blocks: BlocksOpt = None,
    alpha: AlphaOpt = None,
    rho: RhoOpt = None,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    force_merge: Annotated[bool, typer.Option(
        "--force-merge", help="Merge every exactly mergeable conv pair, even where MACs grow.")] = False,
    bias_maps: Annotated[bool, typer.Option(
        "--bias-maps", help="Also merge where the result needs a per-position bias constant "
        "(a get_attr + add in the graph, beyond plain modules).")] = False,
    no_merge: Annotated[bool, typer.Option("--no-merge", help="Fold BNs only; merge no convs.")] = False,
    no_onnx: Annotated[bool, typer.Option("--no-onnx", help="Skip model.onnx.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of fresh weights (no --checkpoint).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL under a plan: dropped ReLUs removed, BN folded, exact linear merges applied."""
    if plan is None and not (cull or thin):
        raise RelucutError("export needs a plan: pass --plan plan.json, or --cull/--thin stages")
    spec = model_spec(model, dataset, num_classes, base_width, widths, blocks, alpha, rho)
    relu_plan = resolve_plan(spec, plan, cull, thin)
    state = load_checkpoint(checkpoint) if checkpoint else None
    result = export_model(spec, relu_plan, state, out, merge=not no_merge, force_merge=force_merge, bias_maps=bias_maps,
                          onnx=not no_onnx, seed=seed, meta={"checkpoint": checkpoint, "dataset": dataset})
    before, after = result.recipe.before, result.recipe.after
    if as_json:
        typer.echo(json.dumps({"out": str(result.out_dir), "before": before, "after": after,
                               "transforms": [t["op"] for t in result.recipe.transforms]}))
        return
    console.print(f"[bold]exported[/] {spec.name} to {result.out_dir}")
    for key in ("relus", "macs", "params", "conv_depth"):
        console.print(f"  {key:<10} {before[key]:>14,} -> {after[key]:,}")
