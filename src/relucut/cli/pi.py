"""``relucut pi estimate|measure|calibrate``: what a network costs in private inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from relucut.cli.app import app, err_console
from relucut.cli.options import (
    CullOpt, EngineOpt, JsonOpt, ModelOptions, PiThreadsOpt, PlanOpt, ThinOpt, check_writable, parse_names,
    renamed, with_model_options,
)
from relucut.errors import RelucutError
from relucut.rundir import atomic_write_json
from relucut.units import BITS_PER_S, SECONDS, parse_quantity

pi_app = typer.Typer(help="Private-inference cost: estimate, measure under SPU (Cheetah 2PC), calibrate.",
                     no_args_is_help=True)
app.add_typer(pi_app, name="pi")
console = Console()

TargetArg = Annotated[str, typer.Argument(help="An export directory (from `relucut export`) or a zoo model name.")]

def _network(target: ModelOptions, cull, thin, plan, seed=0):
    from relucut.pi.networks import load_export_dir, looks_like_path, planned_zoo_model

    if looks_like_path(target.model):
        if cull or thin or plan:
            raise RelucutError("--cull/--thin/--plan apply to zoo models; an export directory already has its plan")
        model, input_size = load_export_dir(target.model)
        return model, input_size, target.model
    spec = target.spec()
    model, _ = planned_zoo_model(spec, plan, parse_names(cull), parse_names(thin), seed=seed)
    return model, spec.input_size, f"{spec.name} / {target.dataset}"


def _human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


@pi_app.command("estimate")
@with_model_options(model_arg=TargetArg)
def estimate_cmd(
    target: ModelOptions,
    protocol: EngineOpt = "delphi",
    old_protocol: Annotated[str | None, typer.Option("--protocol", hidden=True, help="Old name of --engine.")] = None,
    profile_file: Annotated[str | None, typer.Option("--profile", help="Profile file (JSON/TOML) overriding constants.")] = None,
    bandwidth: Annotated[str | None, typer.Option("--bandwidth", help="Link bandwidth with its unit, e.g. 1gbit, "
                                                  "100mbit (default: the engine's).")] = None,
    rtt: Annotated[str | None, typer.Option("--rtt", help="Round-trip time with its unit, e.g. 0.3ms (default: the "
                                            "engine's).")] = None,
    threads: PiThreadsOpt = None,
    old_threads: Annotated[int | None, typer.Option("--threads", hidden=True, help="Old name of --pi-threads.")] = None,
    requests_per_s: Annotated[float | None, typer.Option("--requests-per-s", help="Request rate: model offline on the critical path.")] = None,
    num_requests: Annotated[int, typer.Option("--num-requests", help="Requests simulated at that rate.")] = 100,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    plan: PlanOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate online/offline latency, communication and storage of private inference."""
    from relucut.pi import estimate

    if old_protocol is not None:
        err_console.print(renamed("--protocol", "--engine"), highlight=False)
        protocol = old_protocol
    if old_threads is not None:
        err_console.print(renamed("--threads", "--pi-threads"), highlight=False)
        threads = old_threads

    if num_requests < 1:
        raise RelucutError(f"--num-requests must be >= 1, got {num_requests}")
    from relucut.cost import count

    model, input_size, label = _network(target, cull, thin, plan)
    report = count(model, input_size)
    est = estimate(
        report, protocol, profile_file=profile_file,
        bandwidth_bps=parse_quantity(bandwidth, BITS_PER_S, "--bandwidth", "1gbit") if bandwidth else None,
        rtt_s=parse_quantity(rtt, SECONDS, "--rtt", "0.3ms") if rtt is not None else None,
        threads=threads, requests_per_s=requests_per_s, num_requests=num_requests,
    )
    warning = est.unpriced_line()
    if warning:  # one line, on stderr so --json output stays parseable
        typer.echo(warning, err=True)
    if as_json:
        typer.echo(json.dumps({"network": label, **est.to_dict()}))
        return
    console.print(f"[bold]{label}[/]  protocol [bold]{est.protocol}[/]  ReLUs {est.relus:,} in {est.relu_layers} "
                  f"layers  weight MACs {est.macs / 1e6:.1f}M  link {est.bandwidth_bps / 1e6:g} Mbit/s, "
                  f"RTT {est.rtt_s * 1e3:g} ms, {est.threads} thread(s)")
    table = Table("phase", "latency", "communication")
    table.add_row("offline", f"{est.offline_s:.3f} s", _human_bytes(est.offline_bytes))
    table.add_row("online", f"{est.online_s:.3f} s", _human_bytes(est.online_bytes))
    bound = ">= " if est.lower_bound else ""
    table.add_row("total", f"{bound}{est.total_s:.3f} s", f"{bound}{_human_bytes(est.total_bytes)}", style="bold")
    if est.setup_s or est.setup_bytes:
        table.add_row("one-time setup", f"{est.setup_s:.3f} s", _human_bytes(est.setup_bytes))
    console.print(table)
    console.print(f"storage: client {_human_bytes(est.client_storage_bytes)}, server "
                  f"{_human_bytes(est.server_storage_bytes)} per preprocessed inference")
    if est.requests:
        r = est.requests
        console.print(f"at {r.rate_per_s:g} requests/s ({r.num_requests} requests): throughput "
                      f"{r.throughput_per_s:.3g}/s, latency mean {r.mean_latency_s:.3g} s, p95 {r.p95_latency_s:.3g} s; "
                      f"offline on the critical path for {100 * r.offline_on_critical_path:.0f}% of requests "
                      f"(offline hides below {r.capacity_per_s:.3g} requests/s)")


@pi_app.command("measure")
@with_model_options(model_arg=TargetArg)
def measure_cmd(
    target: ModelOptions,
    mode: Annotated[str, typer.Option("--mode", help="public-weights (lower bound) | shared-weights (upper bound) | both")] = "public-weights",
    runs: Annotated[int, typer.Option("--runs", help="Runs per mode: the first includes OT setup.")] = 3,
    batch: Annotated[int, typer.Option("--batch-size", "--batch", help="Inputs per secure run.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random input (and of zoo weights).")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds allowed for the SPU run.")] = 600.0,
    out: Annotated[str | None, typer.Option("--out", help="Write the results (JSON) here.")] = None,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    plan: PlanOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the network under SecretFlow SPU (Cheetah 2PC, two processes on loopback) and report its costs."""
    from relucut.pi import estimate
    from relucut.pi.measure import MODES, measure, spu_python

    modes = list(MODES) if mode == "both" else [mode]
    if any(m not in MODES for m in modes):
        raise RelucutError(f"unknown --mode '{mode}'; use public-weights, shared-weights or both")
    if batch < 1:
        raise RelucutError(f"--batch must be >= 1, got {batch}")
    if out:
        check_writable(out, folder=False)
    spu_python()  # fail fast, before building anything
    from relucut.cost import count

    model, input_size, label = _network(target, cull, thin, plan, seed=seed)
    results = []
    with console.status("running under SPU ...") if not as_json else _null():
        for m in modes:
            results.append(measure(model, input_size, mode=m, runs=runs, batch=batch, seed=seed, timeout=timeout))
    report = count(model, input_size)
    est, est_spu = estimate(report, "cheetah"), estimate(report, "spu-cheetah")
    payload = {"network": label, "input_size": list(input_size),
               "config": {"runs": runs, "batch": batch, "seed": seed, "modes": modes},
               "measurements": [r.to_dict() for r in results], "estimate_cheetah": est.to_dict(),
               "estimate_spu_cheetah": est_spu.to_dict()}
    if out:
        atomic_write_json(Path(out), payload)
    if as_json:
        typer.echo(json.dumps(payload))
        return
    console.print(f"[bold]{label}[/]  ReLUs {results[0].relus:,} in {results[0].relu_layers} layers  "
                  f"MACs {results[0].macs / 1e6:.1f}M  engine {results[0].engine}, batch {batch}")
    table = Table("mode", "run", "wall", "bytes", "messages", "ReLU bytes", "B/ReLU")
    for r in results:
        per = r.warm.relu_bytes / max(1, r.relus * batch)
        table.add_row(r.mode, "first (incl. OT setup)", f"{r.first.wall_s:.3f} s", _human_bytes(r.first.bytes),
                      f"{r.first.messages:,}", _human_bytes(r.first.relu_bytes), "")
        table.add_row("", f"warm (mean of {r.warm_runs})", f"{r.warm.wall_s:.3f} s", _human_bytes(r.warm.bytes),
                      f"{r.warm.messages:,}", _human_bytes(r.warm.relu_bytes), f"{per:.1f}")
    for e in (est, est_spu):
        table.add_row("estimate", f"{e.protocol} profile, online", f"{e.online_s:.3f} s",
                      _human_bytes(e.online_bytes), "", "", "", style="dim")
    console.print(table)
    for r in results:
        verdict = "[green]matches[/]" if r.matches else "[red]DIFFERS[/]"
        console.print(f"{r.mode}: {r.note}. Secure output {verdict} PyTorch (max |err| {r.max_abs_error:.2e}, "
                      f"output scale {r.max_abs_output:.2e}).")
    if not all(r.matches for r in results):
        raise typer.Exit(1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pi_app.command("calibrate")
def calibrate_cmd(
    measurements: Annotated[list[str], typer.Argument(help="JSON files: `relucut pi measure --json` output or rows of "
                                                           "relus, relu_layers, macs, online_s, online_bytes.")],
    base: Annotated[str, typer.Option("--base", help="Profile whose other constants are kept.")] = "cheetah",
    name: Annotated[str | None, typer.Option("--name", help="Name of the fitted profile.")] = None,
    out: Annotated[str, typer.Option("--out", help="Profile file to write (JSON).")] = "pi-profile.json",
    as_json: JsonOpt = False,
) -> None:
    """Fit per-ReLU / per-MAC / per-layer constants to your measurements and write a profile file."""
    from relucut.pi.calibrate import calibrate, profile_file_data, read_measurements
    from relucut.pi.profiles import get_profile

    check_writable(out, folder=False)
    rows = read_measurements(measurements)
    profile, fit = calibrate(rows, get_profile(base), name)
    data = profile_file_data(profile, base, fit)
    atomic_write_json(Path(out), data)
    if as_json:
        typer.echo(json.dumps(data))
        return
    console.print(f"fitted {fit['measurements']} measurements: {fit['time_fit']['per_relu_s'] * 1e6:.2f} us/ReLU, "
                  f"{fit['time_fit']['per_mac_s'] * 1e9:.3f} ns/MAC, {fit['time_fit']['per_layer_s'] * 1e3:.2f} ms/layer "
                  f"(r2 {fit['time_r2']:.3f}); {fit['bytes_fit']['per_relu']:.1f} B/ReLU, "
                  f"{fit['bytes_fit']['per_mac']:.4f} B/MAC (r2 {fit['bytes_r2']:.3f}) -> {out}")
