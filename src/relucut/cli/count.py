"""``relucut count`` and ``relucut models``: what a network costs, and what the zoo holds."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app
from relucut.cli.options import (
    CullOpt,
    JsonOpt,
    ModelOptions,
    PlanOpt,
    ThinOpt,
    ThinStyleOpt,
    resolve_plan,
    with_model_options,
)
from relucut.errors import RelucutError

if TYPE_CHECKING:
    from relucut.cost import CostReport

console = Console()


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def print_report(report: CostReport, title: str) -> None:
    head = (
        f"[bold]{title}[/]  input {'x'.join(map(str, report.input_size))}  "
        f"ReLUs [bold]{report.relus:,}[/]  MACs {_human(report.macs)}  params {_human(report.params)}  "
        f"conv depth {report.conv_depth}"
    )
    console.print(head)
    kinds = _kinds_line(report)
    if kinds:
        console.print(kinds)
    table = Table(show_lines=False)
    for col, justify in (("stage", "left"), ("sites", "right"), ("ReLUs", "right"),
                         ("of full", "right"), ("% ReLUs", "right"), ("MACs", "right")):
        table.add_column(col, justify=justify)
    by_stage, macs = report.relus_by_stage, report.macs_by_stage
    total = max(report.relus, 1)
    for stage in report.stage_names:
        members = [s for s in report.sites if s.site.stage == stage]
        full = sum(s.total for s in members)
        table.add_row(stage, str(len(members)), f"{by_stage.get(stage, 0):,}", f"{full:,}",
                      f"{100 * by_stage.get(stage, 0) / total:.1f}", _human(macs.get(stage, 0)))
    for group, n in macs.items():  # outside the stages: a zoo model's classifier, a ViT's top-level modules
        if group not in report.stage_names and n:
            table.add_row(group, "0", "0", "0", "0.0", _human(n), style="dim")
    table.add_row("total", str(len(report.sites)), f"{report.relus:,}", f"{report.relus_full:,}", "100.0",
                  _human(report.macs), style="bold")
    console.print(table)


@app.command()
@with_model_options()
def count(
    model: ModelOptions,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    thin_style: ThinStyleOpt = "post_add",
    plan: PlanOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count ReLUs (per site, block, stage), MACs and parameters of MODEL (or of an export dir)."""
    from relucut.cost import count as count_cost
    from relucut.recipe import is_export_dir

    if is_export_dir(model.model):  # an export: its plan is applied and its layers are already reduced
        if plan or cull or thin:
            raise RelucutError(f"'{model.model}' is an export with its plan applied; drop --plan/--cull/--thin")
        from relucut.export import load_export  # torch.onnx and merging only when needed

        net = load_export(model.model)
        spec = net.relucut_recipe.model
        report = count_cost(net, spec.input_size)
        report.meta.update({"model": spec.name, "export": model.model, "spec": spec.to_dict()})
        _show(report, as_json, f"{spec.name} (export {model.model})")
        return
    spec = model.spec()
    net = spec.build()
    report = count_cost(net, spec.input_size, plan=resolve_plan(spec, plan, cull, thin, thin_style))
    report.meta.update({"model": spec.name, "dataset": model.dataset, "spec": spec.to_dict()})
    _show(report, as_json, f"{spec.name} / {model.dataset}")


def _kinds_line(report: CostReport) -> str | None:
    """Non-linearities beyond ReLU, by kind, with the comparisons they cost; None for a ReLU-only net."""
    by_kind = report.nonlinear_by_kind
    if set(by_kind) == {"relu"}:
        return None
    parts = [f"{kind} {n:,}{' comparisons' if kind in ('maxpool', 'max') else ' MACs' if kind == 'matmul' else ''}"
             for kind, n in by_kind.items()]
    return f"non-linearities: {', '.join(parts)}; ReLU-equivalent comparisons {report.comparisons:,}"


def _show(report: CostReport, as_json: bool, title: str) -> None:
    from relucut.pi import estimate  # the PI cost model: estimated DELPHI latency beside the ReLUs

    est = estimate(report, "delphi")
    report.meta["pi_estimate"] = {"protocol": est.protocol, "online_s": est.online_s, "offline_s": est.offline_s,
                                  "online_bytes": est.online_bytes, "offline_bytes": est.offline_bytes,
                                  "unpriced_kinds": est.unpriced_kinds, "unpriced": est.unpriced,
                                  "lower_bound": est.lower_bound, "priced_share": est.priced_share}
    warning = est.unpriced_line()
    if warning:  # exactly one line per run, on stderr so --json output stays parseable
        typer.echo(warning, err=True)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        print_report(report, title)
        bound = "at least " if est.lower_bound else ""
        console.print(f"estimated private inference (DELPHI, `relucut pi estimate`): online {bound}{est.online_s:.2f} s, "
                      f"offline {bound}{est.offline_s:.1f} s")


@app.command()
def models() -> None:
    """List the model zoo."""
    from relucut.models.registry import list_models, model_doc

    table = Table("model", "description")
    for name in list_models():
        table.add_row(name, model_doc(name))
    console.print(table)


@app.command()
@with_model_options()
def sites(model: ModelOptions, as_json: JsonOpt = False) -> None:
    """Every plan site of MODEL (ReLUs, ReLU6s, max-pools) with its stage, block, shape and kind:
    the names that --drop and plan files use."""
    from relucut.sites import find_sites

    spec = model.spec()
    found = find_sites(spec.build(), spec.input_size)
    rows = [site.to_dict() for site in (*found.sites, *found.pools)]
    if as_json:
        typer.echo(json.dumps({"model": spec.name, "spec": spec.to_dict(), "stages": list(found.stage_names),
                               "sites": rows}))
        return
    table = Table("site", "stage", "block", "kind", "shape", "comparisons")
    for row in rows:
        kind = row["kind"] + (" (gate)" if row["gate"] else "")
        table.add_row(row["name"], row["stage"], row["block"], kind, "x".join(map(str, row["shape"])),
                      f"{row['comparisons']:,}")
    console.print(table)


@app.command("plan")
@with_model_options()
def make_plan(
    model: ModelOptions,
    out: Annotated[str, typer.Option("--out", "-o", help="The plan JSON to write.")],
    cull: CullOpt = None,
    thin: ThinOpt = None,
    thin_style: ThinStyleOpt = "post_add",
    drop: Annotated[Optional[str], typer.Option("--drop", help="Sites whose ReLUs are removed, e.g. s1_0_relu1,s2_1_relu2 ('relucut sites').")] = None,
    replace_maxpool: Annotated[bool, typer.Option("--replace-maxpool", help="Every max-pool becomes average pooling (no comparisons).")] = False,
    plan: PlanOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a ReLU plan for MODEL (for --plan of count, train, export, pi): --cull/--thin stages,
    --drop sites, --replace-maxpool, on top of an existing --plan."""
    from relucut.cli.options import check_writable, parse_names
    from relucut.cost import count as count_cost
    from relucut.sites import find_sites

    names = parse_names(drop)
    if not (cull or thin or names or replace_maxpool or plan):
        raise RelucutError("nothing to plan: pass --cull/--thin stages, --drop sites or --replace-maxpool")
    check_writable(out, folder=False)
    spec = model.spec()
    net = spec.build()
    found = find_sites(net, spec.input_size)
    relu_plan = resolve_plan(spec, plan, cull, thin, thin_style)
    for name in names:
        if found[name].is_pool:  # found[...] names the model's sites when one is unknown
            raise RelucutError(f"'{name}' is a max-pool; --drop takes ReLU sites, --replace-maxpool swaps pools")
        relu_plan.drop(name)
    if replace_maxpool:
        if not found.pools:
            raise RelucutError(f"{spec.name} has no max-pool; drop --replace-maxpool")
        relu_plan.replace_maxpools(found)
    relu_plan.meta.update({"model": spec.to_dict(), **({"drop": names} if names else {}),
                           **({"replace_maxpool": True} if replace_maxpool else {})})
    report = count_cost(net, spec.input_size, plan=relu_plan)  # also checks that the plan fits
    relu_plan.save(out)
    summary = {"out": out, "relus": report.relus, "relus_full": report.relus_full,
               "comparisons": report.comparisons, "sites_changed": sum(d.action != "keep" for d in relu_plan.decisions.values())}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        console.print(f"wrote {out}: ReLUs {report.relus_full:,} -> {report.relus:,} "
                      f"({summary['sites_changed']} sites changed)", highlight=False)
