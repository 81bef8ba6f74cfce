"""``relucut export``: write a physically reduced network (recipe + state_dict + ONNX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from relucut.cli.app import app
from relucut.cli.options import (
    CullOpt, ForceOpt, JsonOpt, ModelOptions, PlanOpt, ThinOpt, check_writable, need_extra, resolve_plan,
    with_model_options,
)
from relucut.errors import RelucutError

console = Console()


RunOrModelArg = Annotated[str, typer.Argument(
    help="Zoo model name, 'package.module:factory', or a training run directory (or its .pt checkpoint): "
         "a run brings its own model settings, plan and weights.")]


def _is_run(model: str) -> bool:
    path = Path(model)
    return path.is_dir() or (path.is_file() and path.suffix == ".pt")


@app.command()
@with_model_options(model_arg=RunOrModelArg, dataset=None, dataset_opt=Annotated[Optional[str], typer.Option(
    "--dataset", "-d", help="Dataset preset: input shape and classes (default cifar10).")])
def export(
    model: ModelOptions,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory to write recipe.json, model.pt, model.onnx.")],
    plan: PlanOpt = None,
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", help="Weights of the plan-applied model (a state_dict, or a dict with 'model'); "
        "without it, fresh weights from --seed.")] = None,
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
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL under a plan, or a trained run: dropped ReLUs removed, BN folded, exact linear
    merges applied."""
    from relucut.export import export_model, export_run, load_checkpoint

    options = {"merge": not no_merge, "force_merge": force_merge, "bias_maps": bias_maps, "onnx": not no_onnx,
               "force": force}
    if not Path(out).is_file():  # an existing file: export names it (not an export)
        check_writable(out, folder=True)
    if not no_onnx:
        need_extra("onnx", "export", "model.onnx (pass --no-onnx to skip it)")
    if _is_run(model.model):
        given = [flag for flag, value in (("--plan", plan), ("--checkpoint", checkpoint), ("--dataset", model.dataset),
                                          ("--cull", cull), ("--thin", thin)) if value is not None] + model.given()
        if given:
            raise RelucutError(f"'{model.model}' is a trained run: its config fixes the model, plan and weights, so "
                               f"{', '.join(given)} cannot change them; drop {'it' if len(given) == 1 else 'them'}")
        result = export_run(model.model, out, **options)
        spec_name = result.recipe.model.name
    else:
        if plan is None and not (cull or thin):
            raise RelucutError("export needs a plan: pass --plan plan.json, or --cull/--thin stages "
                               "(or a trained run directory instead of a model name)")
        model.dataset = model.dataset or "cifar10"
        spec = model.spec()
        relu_plan = resolve_plan(spec, plan, cull, thin)
        state = load_checkpoint(checkpoint, spec, relu_plan) if checkpoint else None  # a run's: its own plan
        result = export_model(spec, relu_plan, state, out, seed=seed,
                              meta={"checkpoint": checkpoint, "dataset": model.dataset}, **options)
        spec_name = spec.name
    before, after = result.recipe.before, result.recipe.after
    if as_json:
        typer.echo(json.dumps({"out": str(result.out_dir), "before": before, "after": after,
                               "structure": result.recipe.structure,
                               "transforms": [t["op"] for t in result.recipe.transforms]}))
        return
    console.print(f"[bold]exported[/] {spec_name} to {result.out_dir}")
    for key in ("relus", "macs", "params", "conv_depth"):
        console.print(f"  {key:<10} {before[key]:>14,} -> {after[key]:,}")
