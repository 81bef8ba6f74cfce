"""Price polynomial positions (poly2: c0 + x * (c1 + c2 * x) per channel, AutoReP's linearization) under
SPU the way the other per-element kinds were priced, and check the price on networks the fit never saw.

Every network runs under SecretFlow SPU 0.9.5 (Cheetah, two processes on 127.0.0.1, public weights), as in
bench/spu_kinds.py, in the form relucut exports it (``relucut.export.reduce_model``: BNs folded, masked
sites as gathers, dropped-with-polynomial sites as the per-channel polynomial). The fit set is ResNet18
networks at 16x16 and 32x32 whose linearized positions compute the polynomial: every site linearized,
SNL-style random pixel masks at several densities, DeepReDuce culls (identity) beside polynomial sites;
`relucut.pi.calibrate.calibrate_kinds` fits the poly2 seconds and bytes per element, seconds and bytes
per layer and rounds per layer on what the shipped spu-cheetah terms (ReLUs, MACs, truncations,
gathered elements, layers, other kinds) leave of each measurement. The check set is other families
(CIFAR ResNet20, a HybReNet), channel masks and a wider ResNet18. Three networks are also measured with
their linearized positions as the identity (same masks): the measured difference is what the
polynomials cost there.

Each figure is the mean over every warm run (the busier party's CPU seconds for time), as in
bench/spu_kinds.py. Resumable: measured networks are kept in results/spu_poly.pass<N>.json and skipped.

    nice -n 10 .venv/bin/python bench/spu_poly.py [--runs 4] [--pass 2]
    .venv/bin/python bench/spu_poly.py --analyse-only
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

import relucut
from relucut import ReLUPlan, find_sites
from relucut.export import reduce_model
from relucut.pi import Workload, estimate, get_profile
from relucut.pi.calibrate import calibrate_kinds, measurement_row
from relucut.pi.measure import measure_many
from relucut.plan import apply_plan
from relucut.rundir import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
TARGET = 0.25  # out of sample, estimated / measured - 1 for time and bytes each
KIND = "poly2"
console = Console()

# name, set, model, width, input side, plan: cull stages (identity), masks (kind, keep fraction), linearize
NETWORKS = [
    ("rn18-w4-16 all poly", "fit", "resnet18", 4, 16, {}),
    ("rn18-w8-16 all poly", "fit", "resnet18", 8, 16, {}),
    ("rn18-w8-16 pixel masks 20% + poly", "fit", "resnet18", 8, 16, {"mask": ["random", 0.2]}),
    ("rn18-w8-16 pixel masks 5% + poly", "fit", "resnet18", 8, 16, {"mask": ["random", 0.05]}),
    ("rn18-w8-16 cull stem,s1 + poly s2-s4", "fit", "resnet18", 8, 16, {"cull": ["stem", "s1"]}),
    ("rn18-w4-32 pixel masks 10% + poly", "fit", "resnet18", 4, 32, {"mask": ["random", 0.1]}),
    ("rn18-b1-w8-16 all poly", "fit", "resnet18", 8, 16, {"blocks": [1, 1, 1, 1]}),
    # out of sample: other families and plans
    ("resnet20-w8-16 pixel masks 10% + poly", "check", "resnet20", 8, 16, {"mask": ["random", 0.1]}),
    ("hrn_5x5x3x m4-16 pixel masks 5% + poly", "check", "hrn_5x5x3x", 4, 16, {"mask": ["random", 0.05]}),
    ("rn18-w16-16 channel masks 25% + poly", "check", "resnet18", 16, 16, {"mask": ["channel", 0.25]}),
    ("rn18-w8-32 cull stem,s1,s2 + poly", "check", "resnet18", 8, 32, {"cull": ["stem", "s1", "s2"]}),
    # the same masks with identity at the linearized positions: what the polynomials add, measured
    ("rn18-w8-16 pixel masks 5% (identity)", "twin", "resnet18", 8, 16, {"mask": ["random", 0.05], "identity": True}),
    ("rn18-w8-16 cull stem,s1 (identity s2-s4)", "twin", "resnet18", 8, 16,
     {"cull": ["stem", "s1"], "identity": True}),
    ("resnet20-w8-16 pixel masks 10% (identity)", "twin", "resnet20", 8, 16,
     {"mask": ["random", 0.1], "identity": True}),
]
TWINS = {"rn18-w8-16 pixel masks 5% (identity)": "rn18-w8-16 pixel masks 5% + poly",
         "rn18-w8-16 cull stem,s1 (identity s2-s4)": "rn18-w8-16 cull stem,s1 + poly s2-s4",
         "resnet20-w8-16 pixel masks 10% (identity)": "resnet20-w8-16 pixel masks 10% + poly"}


def _coefficients(channels: int, gen: torch.Generator) -> torch.Tensor:
    """Trained-looking coefficients near the identity: c1 about 1, c0 and c2 small."""
    poly = (torch.rand(3, channels, generator=gen) - 0.5) * torch.tensor([[0.1], [0.2], [0.1]])
    poly[1] += 1.0
    return poly


def build(net, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The exported form of the network: its plan applied, BNs folded, masked sites as gathers."""
    _, _, model_name, width, side, spec = net
    torch.manual_seed(seed)
    extra = {"blocks": spec["blocks"]} if "blocks" in spec else {}
    base = relucut.create_model(model_name, num_classes=10, base_width=width, **extra).eval()
    for module in base.modules():  # non-trivial BN statistics, so folding is exercised
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    input_size = (3, side, side)
    sites = find_sites(base, input_size)
    plan = ReLUPlan.deepreduce(sites, cull=spec.get("cull", []))
    gen, coef_gen = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    for site in sites:  # an identity twin draws the same masks: the coefficients have their own generator
        if site.name in plan.decisions:
            continue
        poly = None if spec.get("identity") else _coefficients(site.shape[0], coef_gen)
        if "mask" not in spec:
            plan.drop(site.name, poly)
            continue
        kind, keep = spec["mask"]
        if kind == "random":  # SNL's pixel masks: scattered positions, at least one per site
            mask = torch.rand(site.shape, generator=gen) < keep
            mask.view(-1)[0] = True
        else:  # channel masks: whole channels kept
            channels = torch.rand(site.shape[0], generator=gen) < keep
            channels[0] = True
            mask = torch.zeros(site.shape, dtype=torch.bool)
            mask[channels] = True
        plan.set_mask(site.name, mask, poly)
    applied = apply_plan(base, plan, input_size).eval()
    return reduce_model(applied, input_size)[0], input_size


def workload_of(net) -> Workload:
    model, input_size = build(net)
    return Workload.of(relucut.count(model, input_size))


def measure_missing(done: dict, runs: int, partial: Path, chunk: int = 4) -> None:
    """Measures the networks not in ``done``, a few at a time in one SPU process pair per input size."""
    by_side: dict[int, list] = {}
    for net in NETWORKS:
        if net[0] not in done["rows"]:
            by_side.setdefault(net[4], []).append(net)
    for side, nets in by_side.items():
        for part in (nets[i: i + chunk] for i in range(0, len(nets), chunk)):
            t0 = time.perf_counter()
            results = measure_many([build(n)[0] for n in part], (3, side, side), mode="public-weights", runs=runs,
                                   timeout=3000)
            console.print(f"[dim]{len(part)} networks at {side}x{side} in {time.perf_counter() - t0:.0f} s[/]")
            for net, m in zip(part, results):
                row = m.to_dict()
                warm = row["meta"].pop("runs")[1:]
                row["warm_runs"] = [{"wall_s": r["wall_s"], "bytes": r["bytes"], "cpu_s_by_party": r["cpu_s_by_party"],
                                     "messages_by_party": r["messages_by_party"]} for r in warm]
                done["rows"][net[0]] = row
                atomic_write_json(partial, done)
                console.print(f"{net[0]}: {m.relus:,} ReLUs, {m.kinds}, warm min CPU "
                              f"{min(max(r['cpu_s_by_party']) for r in warm):.3f} s, {m.warm.bytes / 1e6:.3f} MB, "
                              f"matches={m.matches} (max err {m.max_abs_error:.1e})")


def pooled_passes() -> dict:
    passes = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("spu_poly.pass*.json"))]
    if not passes:
        raise SystemExit("no measurements yet: run bench/spu_poly.py without --analyse-only")
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
    """Mean over every warm run (pool refills included): the busier party's CPU seconds, bytes, rounds."""
    runs = m["warm_runs"]
    return {"cpu_s": float(np.mean([max(r["cpu_s_by_party"]) for r in runs])),
            "online_bytes": float(np.mean([r["bytes"] for r in runs])),
            "rounds": float(np.mean([max(r["messages_by_party"]) for r in runs])),
            "wall_s": min(r["wall_s"] for r in runs), "runs": len(runs)}


def analyse(done: dict) -> dict:
    shipped = get_profile("spu-cheetah")
    base = replace(shipped, kind_costs={k: v for k, v in shipped.kind_costs.items() if k != KIND})
    rows = []
    for net in NETWORKS:
        if net[0] not in done["rows"]:
            continue
        m = done["rows"][net[0]]
        work = workload_of(net)
        assert work.relus == m["relus"] and work.smooth == m["kinds"], (net[0], work, m["kinds"])
        typical = amortised(m)
        rows.append((net, work, m, {**measurement_row(work), "online_s": typical["cpu_s"],
                                    "online_bytes": typical["online_bytes"], "rounds": typical["rounds"]}, typical))
    fitted, fit = calibrate_kinds([r for net, _, _, r, _ in rows if net[1] == "fit"], base, "spu-cheetah")
    table = []
    for net, work, m, row, typical in rows:
        out = {"network": net[0], "set": {"fit": "in-sample", "check": "out-of-sample", "twin": "identity twin"}[net[1]],
               "input": [3, net[4], net[4]], **measurement_row(work), "measured_s": row["online_s"],
               "measured_wall_s": typical["wall_s"], "measured_bytes": row["online_bytes"],
               "measured_rounds": row["rounds"], "warm_runs": typical["runs"],
               "matches_pytorch": m["matches"], "max_abs_error": m["max_abs_error"]}
        for label, prof in (("fit", fitted), ("shipped", shipped), ("without_poly", base)):
            est = estimate(work, prof, rtt_s=0.0, threads=1)
            out[f"{label}_s"], out[f"{label}_bytes"], out[f"{label}_rounds"] = est.online_s, est.online_bytes, \
                est.online_rounds
            out[f"{label}_time_ratio"] = est.online_s / row["online_s"]
            out[f"{label}_bytes_ratio"] = est.online_bytes / row["online_bytes"]
            out[f"{label}_rounds_ratio"] = est.online_rounds / row["rounds"]
        table.append(out)
    by_name = {r["network"]: r for r in table}
    twins = []
    for twin, poly in TWINS.items():
        if twin in by_name and poly in by_name:
            a, b = by_name[poly], by_name[twin]
            twins.append({"network": poly, "poly_elements": a[f"kind:{KIND}"], "poly_layers": a[f"kind_layers:{KIND}"],
                          "measured_extra_s": a["measured_s"] - b["measured_s"],
                          "measured_extra_bytes": a["measured_bytes"] - b["measured_bytes"],
                          "fit_extra_s": a["fit_s"] - b["fit_s"], "fit_extra_bytes": a["fit_bytes"] - b["fit_bytes"]})

    def worst(key: str, subset: str) -> float:
        return max((abs(r[key] - 1) for r in table if r["set"] == subset), default=float("nan"))

    keys = ("fit_time", "fit_bytes", "fit_rounds", "without_poly_time", "without_poly_bytes")
    relu = {"online_s": shipped.relu_online_s, "online_bytes": shipped.relu_online_bytes}
    costs = fit["kind_costs"][KIND]
    return {"config": done["config"], "rows": table, "twins": twins, "fit": fit, "kind_costs": {KIND: costs},
            "relu_equivalents": {term: costs[term] / relu[term] for term in relu}, "target": TARGET,
            "worst_out_of_sample": {k: worst(f"{k}_ratio", "out-of-sample") for k in keys},
            "worst_in_sample": {k: worst(f"{k}_ratio", "in-sample") for k in keys}}


def markdown(result: dict) -> str:
    fit, c = result["fit"], result["kind_costs"][KIND]
    lines = [
        "# Polynomial positions (poly2) under SPU Cheetah (bench/spu_poly.py)",
        "",
        (f"SPU 0.9.5, Cheetah, FM64, public weights, two processes on loopback; {result['config']['passes']} pass(es) "
         f"of {result['config']['runs']} runs (the first of each pass holds the OT set-up and is left out). "
         "Networks in relucut's exported form. Time: the busier party's CPU seconds; time, bytes and rounds are "
         "means over every warm run. The poly2 terms are fitted by `relucut.pi.calibrate.calibrate_kinds` on what "
         "the shipped spu-cheetah terms leave of the in-sample rows."),
        "",
        "| kind | us / element | bytes / element | ms / layer | KB / layer | rounds / layer | x ReLU (time, bytes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        (f"| poly2 | {c['online_s'] * 1e6:.2f} | {c['online_bytes']:.1f} | {c['layer_online_s'] * 1e3:.2f} | "
         f"{c['layer_online_bytes'] / 1e3:.1f} | {c.get('rounds_per_layer', 0):.1f} | "
         f"{result['relu_equivalents']['online_s']:.2f}, {result['relu_equivalents']['online_bytes']:.2f} |"),
        "",
        (f"Fit: time r² {fit['time_r2']:.4f} (worst {100 * fit['time_max_rel_error']:.1f} %), bytes r² "
         f"{fit['bytes_r2']:.6f} (worst {100 * fit['bytes_max_rel_error']:.1f} %)"
         + (f", rounds r² {fit['rounds_r2']:.4f}" if "rounds_r2" in fit else "") + "."),
        "",
        ("| network | set | ReLUs | poly2 (layers) | measured s | fit s | ratio | measured MB | fit MB | ratio | "
         "rounds meas. / fit | without poly2: s ratio, bytes ratio |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['network']} | {r['set']} | {int(r['relus']):,} | {int(r.get(f'kind:{KIND}', 0)):,} "
                     f"({int(r.get(f'kind_layers:{KIND}', 0))}) | {r['measured_s']:.3f} | {r['fit_s']:.3f} | "
                     f"{r['fit_time_ratio']:.2f} | {r['measured_bytes'] / 1e6:.3f} | {r['fit_bytes'] / 1e6:.3f} | "
                     f"{r['fit_bytes_ratio']:.3f} | {r['measured_rounds']:.0f} / {r['fit_rounds']:.0f} | "
                     f"{r['without_poly_time_ratio']:.2f}, {r['without_poly_bytes_ratio']:.2f} |")
    if result["twins"]:
        lines += ["", "What the polynomials add, measured against the same masks with identity positions:", "",
                  "| network | poly2 elements (layers) | measured extra s | fit extra s | measured extra MB | fit extra MB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for t in result["twins"]:
            lines.append(f"| {t['network']} | {int(t['poly_elements']):,} ({int(t['poly_layers'])}) | "
                         f"{t['measured_extra_s']:.3f} | {t['fit_extra_s']:.3f} | {t['measured_extra_bytes'] / 1e6:.3f} | "
                         f"{t['fit_extra_bytes'] / 1e6:.3f} |")
    w_out, w_in = result["worst_out_of_sample"], result["worst_in_sample"]
    lines += [
        "",
        (f"Worst error out of sample: time {100 * w_out['fit_time']:.1f} %, bytes {100 * w_out['fit_bytes']:.1f} %, "
         f"rounds {100 * w_out['fit_rounds']:.1f} % (target {100 * result['target']:.0f} % for time and bytes); "
         f"in sample: time {100 * w_in['fit_time']:.1f} %, bytes {100 * w_in['fit_bytes']:.1f} %."),
        (f"Without the poly2 terms (polynomials priced as free): out of sample the estimate was off by up to "
         f"{100 * w_out['without_poly_time']:.0f} % in time and {100 * w_out['without_poly_bytes']:.0f} % in bytes."),
        (f"Every secure output equals PyTorch: {all(r['matches_pytorch'] for r in result['rows'])} "
         f"(worst max |error| {max(r['max_abs_error'] for r in result['rows']):.1e})."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--pass", dest="pass_no", type=int, default=1)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.analyse_only:
        partial = RESULTS / f"spu_poly.pass{args.pass_no}.json"
        done = json.loads(partial.read_text()) if partial.exists() else {"config": {"runs": args.runs}, "rows": {}}
        measure_missing(done, args.runs, partial)
    result = analyse(pooled_passes())
    atomic_write_json(RESULTS / "spu_poly.json", result)
    atomic_write_text(RESULTS / "spu_poly.md", markdown(result))
    console.print(markdown(result))


if __name__ == "__main__":
    main()
