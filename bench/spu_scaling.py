"""SPU (Cheetah 2PC) cost vs ReLU count across plans of one resnet18-family network at 32x32.

Measures each plan under SecretFlow SPU (two processes on loopback, public weights), fits
bytes = a * ReLUs + b (r^2), and sets the cheetah cost model's estimate beside each measurement.
Resumable: finished plans are kept in the partial results file and skipped on a re-run.

    nice -n 10 .venv/bin/python bench/spu_scaling.py [--base-width 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import relucut
from relucut import ReLUPlan, find_sites
from relucut.pi import Workload, estimate
from relucut.pi.calibrate import calibrate
from relucut.pi.measure import measure
from relucut.pi.profiles import get_profile
from relucut.plan import apply_plan

RESULTS = Path(__file__).parent / "results"
INPUT = (3, 32, 32)
console = Console()


def plans(sites) -> dict[str, ReLUPlan]:
    masked = ReLUPlan.deepreduce(sites, cull=["stem", "s1"])
    for site in sites:
        if site.stage in ("s2", "s3", "s4"):
            mask = torch.zeros(site.shape, dtype=torch.bool)
            mask.view(-1)[::4] = True  # one position in four keeps its ReLU
            masked.set_mask(site.name, mask)
    return {
        "full": ReLUPlan(),
        "cull stem,s1": ReLUPlan.deepreduce(sites, cull=["stem", "s1"]),
        "cull stem,s1 thin s2,s3,s4": ReLUPlan.deepreduce(sites, cull=["stem", "s1"], thin=["s2", "s3", "s4"]),
        "cull stem,s1,s4 thin s2,s3": ReLUPlan.deepreduce(sites, cull=["stem", "s1", "s4"], thin=["s2", "s3"]),
        "cull stem,s1 + 1/4 masks s2-s4": masked,
        "cull stem,s1,s2,s3": ReLUPlan.deepreduce(sites, cull=["stem", "s1", "s2", "s3"]),
    }


def atomic_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def r_squared(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    return float(slope), float(intercept), 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = {"model": "resnet18", "base_width": args.base_width, "input": list(INPUT), "num_classes": 10,
              "runs": args.runs, "seed": args.seed, "mode": "public-weights", "batch": 1,
              "engine": "spu 0.9.5 cheetah FM64, 2 processes on 127.0.0.1", "threads_machine": os.cpu_count()}
    RESULTS.mkdir(exist_ok=True)
    partial_path = RESULTS / "spu_scaling.partial.json"
    done = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    if done.get("config") != config:
        done = {"config": config, "rows": {}}
    torch.manual_seed(args.seed)
    base = relucut.create_model("resnet18", num_classes=10, base_width=args.base_width).eval()
    sites = find_sites(base, INPUT)
    for name, plan in plans(sites).items():
        if name in done["rows"]:
            console.print(f"[dim]{name}: done[/]")
            continue
        model = apply_plan(base, plan, INPUT).eval()
        t0 = time.perf_counter()
        m = measure(model, INPUT, mode="public-weights", runs=args.runs, seed=args.seed)
        row = m.to_dict()
        runs = row["meta"].pop("runs")
        row["warm_ops"] = runs[-1]["ops"]  # per-op seconds and bytes of the last warm run
        # the least-disturbed warm run: these 2 cores are shared, so the mean carries others' load
        row["warm_min_s"] = min(r["wall_s"] for r in runs[1:])
        row["harness_s"] = time.perf_counter() - t0
        done["rows"][name] = row
        atomic_json(partial_path, done)
        console.print(f"{name}: {m.relus:,} ReLUs, warm {m.warm.wall_s:.2f} s {m.warm.bytes / 1e6:.2f} MB, "
                      f"first {m.first.wall_s:.2f} s, matches={m.matches}")

    rows = done["rows"]
    relus = np.array([r["relus"] for r in rows.values()], float)
    warm_bytes = np.array([r["warm"]["bytes"] for r in rows.values()], float)
    warm_s = np.array([r["warm_min_s"] for r in rows.values()], float)
    b_slope, b_icpt, b_r2 = r_squared(relus, warm_bytes)
    t_slope, t_icpt, t_r2 = r_squared(relus, warm_s)
    fitted, fit = calibrate([{"relus": r["relus"], "relu_layers": r["relu_layers"], "macs": r["macs"],
                              "online_s": r["warm_min_s"], "online_bytes": r["warm"]["bytes"],
                              "setup_s": r["first"]["wall_s"] - r["warm_min_s"],
                              "setup_bytes": r["first"]["bytes"] - r["warm"]["bytes"]} for r in rows.values()],
                            get_profile("cheetah"), "spu-cheetah-here")
    table = []
    for name, r in rows.items():
        work = Workload(r["relus"], r["relu_layers"], r["macs"])
        est = estimate(work, "cheetah")
        table.append({"plan": name, "relus": r["relus"], "relu_layers": r["relu_layers"], "macs": r["macs"],
                      "measured_s": r["warm_min_s"], "measured_mean_s": r["warm"]["wall_s"],
                      "measured_bytes": r["warm"]["bytes"],
                      "measured_relu_bytes": r["warm"]["relu_bytes"], "first_s": r["first"]["wall_s"],
                      "first_bytes": r["first"]["bytes"], "messages": r["warm"]["messages"],
                      "estimate_s": est.online_s, "estimate_bytes": est.online_bytes,
                      "time_ratio": est.online_s / r["warm_min_s"],
                      "conv_s": r["warm_ops"].get("pphlo.convolution", {}).get("seconds", 0.0),
                      "compare_s": r["warm_ops"].get("pphlo.less", {}).get("seconds", 0.0),
                      "bytes_ratio": est.online_bytes / r["warm"]["bytes"],
                      "matches_pytorch": r["matches"], "max_abs_error": r["max_abs_error"]})
    summary = {"config": config, "rows": table,
               "bytes_vs_relus": {"slope_B_per_relu": b_slope, "intercept_B": b_icpt, "r2": b_r2},
               "time_vs_relus": {"slope_s_per_relu": t_slope, "intercept_s": t_icpt, "r2": t_r2},
               "calibrated": {"fit": fit, "profile": fitted.to_dict()}}
    atomic_json(RESULTS / "spu_scaling.json", summary)
    write_markdown(summary)
    console.print(f"bytes = {b_slope:.1f} B/ReLU x ReLUs + {b_icpt / 1e3:.0f} KB, r2 = {b_r2:.4f}; "
                  f"time r2 = {t_r2:.4f}")


def add_estimates(table: list[dict]) -> None:
    for row in table:
        est = estimate(Workload(row["relus"], row["relu_layers"], row["macs"]), "cheetah")
        row.update(estimate_s=est.online_s, estimate_bytes=est.online_bytes,
                   time_ratio=est.online_s / row["measured_s"], bytes_ratio=est.online_bytes / row["measured_bytes"])


def write_markdown(s: dict) -> None:
    c = s["config"]
    lines = [
        "# SPU (Cheetah) cost vs ReLU count",
        "",
        (f"resnet18 family, base width {c['base_width']} (reduced from 64 for these {c['threads_machine']} cores), "
        f"input {'x'.join(map(str, c['input']))}, batch 1, {c['engine']}, weights public (a lower bound), "
        f"warm = fastest of {c['runs'] - 1} runs after the first (which carries the OT setup; the machine's "
        "2 cores were shared with other jobs, so times are noisy, bytes are exact). "
        "Estimate: `relucut pi estimate --protocol cheetah` (online)."),
        "",
        "| plan | ReLUs | layers | measured s (mean) | conv s / compare s | measured MB | est. s | est. MB | est/meas time | est/meas bytes | first run s / MB | output = PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['plan']} | {r['relus']:,} | {r['relu_layers']} | {r['measured_s']:.2f} ({r['measured_mean_s']:.2f}) | "
            f"{r['conv_s']:.2f} / {r['compare_s']:.2f} | {r['measured_bytes'] / 1e6:.2f} | "
            f"{r['estimate_s']:.2f} | {r['estimate_bytes'] / 1e6:.2f} | {r['time_ratio']:.2f} | {r['bytes_ratio']:.2f} | "
            f"{r['first_s']:.2f} / {r['first_bytes'] / 1e6:.2f} | {r['matches_pytorch']} ({r['max_abs_error']:.1e}) |")
    b, t, f = s["bytes_vs_relus"], s["time_vs_relus"], s["calibrated"]["fit"]
    lines += [
        "",
        ("The `cheetah` profile takes its bytes per ReLU from the Cheetah paper (55 B) but its time constants "
        "from these rows, so the time columns are in-sample. The `spu-cheetah` profile is fitted on other "
        "networks, with truncation, gather and per-layer terms, and checked out of sample in "
        "spu_calibration.md."),
        "",
        (f"Linear fit, warm bytes vs ReLUs: {b['slope_B_per_relu']:.1f} B per ReLU + {b['intercept_B'] / 1e3:.0f} KB, "
        f"**r² = {b['r2']:.4f}**. Warm time vs ReLUs: {t['slope_s_per_relu'] * 1e6:.1f} µs per ReLU + "
        f"{t['intercept_s']:.2f} s, r² = {t['r2']:.4f}."),
        "",
        (f"`relucut pi calibrate` on these rows: {f['time_fit']['per_relu_s'] * 1e6:.1f} µs/ReLU, "
        f"{f['time_fit']['per_mac_s'] * 1e9:.2f} ns/MAC, {f['time_fit']['per_layer_s'] * 1e3:.1f} ms/ReLU layer "
        f"(r² {f['time_r2']:.3f}); {f['bytes_fit']['per_relu']:.1f} B/ReLU, {f['bytes_fit']['per_mac']:.3f} B/MAC "
        f"(r² {f['bytes_r2']:.3f})."),
    ]
    lines += ["", "## Where the cost model and the engine disagree, and why", ""] + discussion(s)
    (RESULTS / "spu_scaling.md").write_text("\n".join(lines) + "\n")


def discussion(s: dict) -> list[str]:
    rows, b = s["rows"], s["bytes_vs_relus"]
    full, small = rows[0], rows[-1]
    compare_b = full["measured_relu_bytes"] / full["relus"]
    mux_b = b["slope_B_per_relu"] - compare_b
    conv_share = small["conv_s"] / small["measured_s"]
    return [
        (f"- **Bytes per ReLU.** SPU's Cheetah ReLU is a comparison ({compare_b:.1f} B per ReLU, `pphlo.less`) "
        f"plus a multiplexer (about {mux_b:.1f} B, `pphlo.multiply`): {b['slope_B_per_relu']:.1f} B per ReLU "
        "against the 52-59 B of the Cheetah paper that the `cheetah` profile uses, so the profile under-states "
        "bytes of ReLU-heavy plans by up to about 1.8x. Bytes are exactly linear in ReLUs (masked sites "
        "included: their gathers are local)."),
        (f"- **Bytes not from ReLUs.** About {b['intercept_B'] / 1e3:.0f} KB per inference do not depend on the "
        "plan: the truncations after each convolution with public weights (`pphlo.convolution`). The profile's "
        "per-MAC byte term (0.05 B/MAC, meant for HE linear layers with private weights) over-states this for "
        "public weights, so the smallest plans are over-estimated."),
        (f"- **Time.** With public weights SPU computes every convolution locally in 64-bit fixed point: "
        f"{small['conv_s']:.2f} s of the smallest plan's {small['measured_s']:.2f} s ({100 * conv_share:.0f} %) "
        "whatever the ReLU count, because all plans keep the same MACs. ReLU count alone would predict a "
        f"{full['relus'] / small['relus']:.0f}x speed-up from the full network to the smallest plan; the engine "
        f"gives {full['measured_s'] / small['measured_s']:.1f}x. The model's per-MAC time term is what carries "
        "this; in DELPHI the same work is offline and the online phase is ReLU-bound."),
        ("- **Noise.** These 2 cores were shared with other jobs during the runs: times (fastest warm run shown, "
        "mean in brackets; op times from the last warm run) move by tens of percent between runs; warm bytes "
        "moved by under 2 % between two runs of this bench."),
        (f"- **Set-up.** The first run carries the one-time OT set-up: {(full['first_bytes'] - full['measured_bytes']) / 1e6:.1f} MB "
        f"and {full['first_s'] - full['measured_s']:.1f} s more than a warm run for the full network (the issue "
        "quotes about 3.5 MB for Cheetah's silent OT)."),
    ]


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--markdown-only"]:  # re-estimate with today's profiles, re-write the note
        summary = json.loads((RESULTS / "spu_scaling.json").read_text())
        add_estimates(summary["rows"])
        atomic_json(RESULTS / "spu_scaling.json", summary)
        write_markdown(summary)
    else:
        main()
