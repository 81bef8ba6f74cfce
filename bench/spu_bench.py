"""What bench/spu_calibration.py, bench/spu_kinds.py and bench/spu_poly.py share: measuring networks under
SPU into resumable pass files, pooling the passes, setting estimates beside measurements, and the parts of
the report they word alike. Each script keeps its networks, its analysis and its table columns.

A pass file (results/<name>.pass<N>.json) holds ``{"config": ..., "rows": {network: row}}``; a row is
``Measurement.to_dict()`` with the warm runs (all but the first, which holds the OT set-up) in
``warm_runs``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from relucut.pi import Workload, estimate
from relucut.pi.calibrate import measurement_row
from relucut.pi.measure import measure_many
from relucut.rundir import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
TARGET = 0.25  # out of sample, estimated / measured - 1 for time and bytes each
console = Console()


def measure_missing(done: dict, partial: Path, networks: Sequence[tuple], runs: int, *,
                    build: Callable, input_size: Callable, describe: Callable, chunk: int = 4,
                    warm_summary: Callable | None = None, timeout: float = 600.0) -> None:
    """Measures the networks not in ``done``, ``chunk`` at a time in one SPU process pair per input size,
    writing ``partial`` after each. ``build(net)`` gives the model, ``input_size(net)`` its input,
    ``describe(net, measurement, row, warm)`` the line printed; ``warm_summary(warm)`` adds fields to a row."""
    by_size: dict[tuple, list] = {}
    for net in networks:
        if net[0] not in done["rows"]:
            by_size.setdefault(input_size(net), []).append(net)
    for size, nets in by_size.items():
        for part in (nets[i: i + chunk] for i in range(0, len(nets), chunk)):
            t0 = time.perf_counter()
            results = measure_many([build(n) for n in part], size, mode="public-weights", runs=runs, timeout=timeout)
            console.print(f"[dim]{len(part)} networks at {'x'.join(map(str, size))} in "
                          f"{time.perf_counter() - t0:.0f} s[/]")
            for net, m in zip(part, results):
                row = m.to_dict()
                warm = row["meta"].pop("runs")[1:]
                if warm_summary is not None:
                    row.update(warm_summary(warm))
                row["warm_runs"] = [{"wall_s": r["wall_s"], "bytes": r["bytes"], "cpu_s_by_party": r["cpu_s_by_party"],
                                     "messages_by_party": r["messages_by_party"]} for r in warm]
                done["rows"][net[0]] = row
                atomic_write_json(partial, done)
                console.print(describe(net, m, row, warm))


def read_passes(name: str) -> list[dict]:
    """Every results/<name>.pass<N>.json, in order."""
    passes = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{name}.pass*.json"))]
    if not passes:
        raise SystemExit(f"no measurements yet: run bench/{name}.py without --analyse-only")
    return passes


def pool(passes: list[dict]) -> dict:
    """The passes' rows, each network's warm runs pooled across passes (its outputs match only if all did)."""
    pooled: dict = {"config": {**passes[0]["config"], "passes": len(passes)}, "rows": {}}
    for one in passes:
        for name, row in one["rows"].items():
            if name in pooled["rows"]:
                pooled["rows"][name]["warm_runs"] += row["warm_runs"]
                pooled["rows"][name]["matches"] &= row["matches"]
                pooled["rows"][name]["max_abs_error"] = max(pooled["rows"][name]["max_abs_error"], row["max_abs_error"])
            else:
                pooled["rows"][name] = {**row, "warm_runs": list(row["warm_runs"])}
    return pooled


def amortised(m: dict) -> dict:
    """Mean over every warm run (pool refills included): the busier party's CPU seconds, bytes, rounds;
    and the fastest wall time, for comparison."""
    runs = m["warm_runs"]
    return {"cpu_s": float(np.mean([max(r["cpu_s_by_party"]) for r in runs])),
            "online_bytes": float(np.mean([r["bytes"] for r in runs])),
            "rounds": float(np.mean([max(r["messages_by_party"]) for r in runs])),
            "wall_s": min(r["wall_s"] for r in runs), "runs": len(runs)}


def fit_row(work: Workload, typical: dict) -> dict:
    """A network's counts with its measured CPU seconds, bytes and rounds: one row for the calibration fits."""
    return {**measurement_row(work), "online_s": typical["cpu_s"], "online_bytes": typical["online_bytes"],
            "rounds": typical["rounds"]}


def amortised_rows(networks: Sequence[tuple], done: dict, workload_of: Callable) -> list[tuple]:
    """(net, workload, pooled measurement, fit row, amortised figures) for each measured network, whose
    counted ReLUs and kinds must be those SPU ran (spu_kinds.py, spu_poly.py)."""
    rows = []
    for net in networks:
        if net[0] not in done["rows"]:
            continue
        m = done["rows"][net[0]]
        work = workload_of(net)
        assert work.relus == m["relus"] and work.smooth == m["kinds"], (net[0], work, m["kinds"])
        typical = amortised(m)
        rows.append((net, work, m, fit_row(work, typical), typical))
    return rows


def amortised_table(rows: list[tuple], profiles: Sequence[tuple], subset: Callable, input_size: Callable) -> list[dict]:
    """Each amortised row's counts and measurement beside each (label, profile)'s estimate."""
    table = []
    for net, work, m, row, typical in rows:
        out = {"network": net[0], "set": subset(net), "input": list(input_size(net)), **measurement_row(work),
               "measured_s": row["online_s"], "measured_wall_s": typical["wall_s"], "measured_bytes": row["online_bytes"],
               "measured_rounds": row["rounds"], "warm_runs": typical["runs"],
               "matches_pytorch": m["matches"], "max_abs_error": m["max_abs_error"]}
        add_estimates(out, work, row, profiles)
        table.append(out)
    return table


def add_estimates(out: dict, work: Workload, row: dict, profiles: Sequence[tuple]) -> None:
    """Each (label, profile)'s loopback estimate of ``work`` and its ratio to the measured ``row``."""
    for label, prof in profiles:
        est = estimate(work, prof, rtt_s=0.0, threads=1)
        out[f"{label}_s"], out[f"{label}_bytes"], out[f"{label}_rounds"] = est.online_s, est.online_bytes, \
            est.online_rounds
        out[f"{label}_time_ratio"] = est.online_s / row["online_s"]
        out[f"{label}_bytes_ratio"] = est.online_bytes / row["online_bytes"]
        out[f"{label}_rounds_ratio"] = est.online_rounds / row["rounds"]


def worst_error(rows: list[dict], key: str) -> float:
    """The largest |ratio - 1| of ``key`` over the rows (nan for none)."""
    return max((abs(r[key] - 1) for r in rows), default=float("nan"))


def worst_by_set(table: list[dict], keys: Sequence[str]) -> dict:
    """Each key's worst error out of sample and in sample, as the results file stores them."""
    return {f"worst_{subset.replace('-', '_')}": {k: worst_error([r for r in table if r["set"] == subset], f"{k}_ratio")
                                                 for k in keys}
            for subset in ("out-of-sample", "in-sample")}


def spu_setup_sentence(config: dict) -> str:
    return (f"SPU 0.9.5, Cheetah, FM64, public weights, two processes on loopback; {config['passes']} pass(es) "
            f"of {config['runs']} runs (the first of each pass holds the OT set-up and is left out).")


KIND_COSTS_HEADER = [
    "| kind | us / element | bytes / element | ms / layer | KB / layer | rounds / layer | x ReLU (time, bytes) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def kind_costs_line(kind: str, c: dict, relu_equivalent: dict) -> str:
    """One kind's fitted terms as a row under KIND_COSTS_HEADER."""
    return (f"| {kind} | {c['online_s'] * 1e6:.2f} | {c['online_bytes']:.1f} | {c['layer_online_s'] * 1e3:.2f} | "
            f"{c['layer_online_bytes'] / 1e3:.1f} | {c.get('rounds_per_layer', 0):.1f} | "
            f"{relu_equivalent['online_s']:.2f}, {relu_equivalent['online_bytes']:.2f} |")


def fit_quality(fit: dict) -> str:
    return (f"Fit: time r² {fit['time_r2']:.4f} (worst {100 * fit['time_max_rel_error']:.1f} %), bytes r² "
            f"{fit['bytes_r2']:.6f} (worst {100 * fit['bytes_max_rel_error']:.1f} %)"
            + (f", rounds r² {fit['rounds_r2']:.4f}" if "rounds_r2" in fit else ""))


def worst_error_lines(result: dict, without: str, without_text: str) -> list[str]:
    """The closing lines: worst fitted error out of and in sample, the same for the profile ``without``
    the new terms (``without_text`` names them), and whether every secure output equalled PyTorch."""
    w_out, w_in = result["worst_out_of_sample"], result["worst_in_sample"]
    return [
        (f"Worst error out of sample: time {100 * w_out['fit_time']:.1f} %, bytes {100 * w_out['fit_bytes']:.1f} %, "
         f"rounds {100 * w_out['fit_rounds']:.1f} % (target {100 * result['target']:.0f} % for time and bytes); "
         f"in sample: time {100 * w_in['fit_time']:.1f} %, bytes {100 * w_in['fit_bytes']:.1f} %."),
        (f"Without {without_text}: out of sample the estimate was off by up to "
         f"{100 * w_out[f'{without}_time']:.0f} % in time and {100 * w_out[f'{without}_bytes']:.0f} % in bytes."),
        (f"Every secure output equals PyTorch: {all(r['matches_pytorch'] for r in result['rows'])} "
         f"(worst max |error| {max(r['max_abs_error'] for r in result['rows']):.1e})."),
    ]


def main(name: str, description: str, measure: Callable, analyse: Callable, markdown: Callable) -> None:
    """spu_kinds.py's and spu_poly.py's command line: measure what pass N lacks (unless --analyse-only),
    then analyse all passes and write results/<name>.json and .md."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--pass", dest="pass_no", type=int, default=1)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.analyse_only:
        partial = RESULTS / f"{name}.pass{args.pass_no}.json"
        done = json.loads(partial.read_text()) if partial.exists() else {"config": {"runs": args.runs}, "rows": {}}
        measure(done, args.runs, partial)
    result = analyse(pool(read_passes(name)))
    atomic_write_json(RESULTS / f"{name}.json", result)
    atomic_write_text(RESULTS / f"{name}.md", markdown(result))
    console.print(markdown(result))
