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

import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import relucut
from relucut import ReLUPlan, find_sites
from relucut.export import reduce_model
from relucut.pi import Workload, get_profile
from relucut.pi.calibrate import calibrate_kinds
from relucut.plan import apply_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package
import spu_bench
from spu_bench import TARGET, amortised_rows, amortised_table, worst_by_set

KIND = "poly2"

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


def measure_missing(done: dict, runs: int, partial: Path) -> None:
    spu_bench.measure_missing(
        done, partial, NETWORKS, runs, build=lambda net: build(net)[0], input_size=lambda net: (3, net[4], net[4]),
        timeout=3000, describe=lambda net, m, row, warm: (
            f"{net[0]}: {m.relus:,} ReLUs, {m.kinds}, warm min CPU "
            f"{min(max(r['cpu_s_by_party']) for r in warm):.3f} s, {m.warm.bytes / 1e6:.3f} MB, "
            f"matches={m.matches} (max err {m.max_abs_error:.1e})"))


def analyse(done: dict) -> dict:
    shipped = get_profile("spu-cheetah")
    base = replace(shipped, kind_costs={k: v for k, v in shipped.kind_costs.items() if k != KIND})
    rows = amortised_rows(NETWORKS, done, workload_of)
    fitted, fit = calibrate_kinds([r for net, _, _, r, _ in rows if net[1] == "fit"], base, "spu-cheetah")
    table = amortised_table(rows, (("fit", fitted), ("shipped", shipped), ("without_poly", base)),
                            subset=lambda net: {"fit": "in-sample", "check": "out-of-sample", "twin": "identity twin"}[net[1]],
                            input_size=lambda net: (3, net[4], net[4]))
    by_name = {r["network"]: r for r in table}
    twins = []
    for twin, poly in TWINS.items():
        if twin in by_name and poly in by_name:
            a, b = by_name[poly], by_name[twin]
            twins.append({"network": poly, "poly_elements": a[f"kind:{KIND}"], "poly_layers": a[f"kind_layers:{KIND}"],
                          "measured_extra_s": a["measured_s"] - b["measured_s"],
                          "measured_extra_bytes": a["measured_bytes"] - b["measured_bytes"],
                          "fit_extra_s": a["fit_s"] - b["fit_s"], "fit_extra_bytes": a["fit_bytes"] - b["fit_bytes"]})
    keys = ("fit_time", "fit_bytes", "fit_rounds", "without_poly_time", "without_poly_bytes")
    relu = {"online_s": shipped.relu_online_s, "online_bytes": shipped.relu_online_bytes}
    costs = fit["kind_costs"][KIND]
    return {"config": done["config"], "rows": table, "twins": twins, "fit": fit, "kind_costs": {KIND: costs},
            "relu_equivalents": {term: costs[term] / relu[term] for term in relu}, "target": TARGET,
            **worst_by_set(table, keys)}


def markdown(result: dict) -> str:
    fit, c = result["fit"], result["kind_costs"][KIND]
    lines = [
        "# Polynomial positions (poly2) under SPU Cheetah (bench/spu_poly.py)",
        "",
        (spu_bench.spu_setup_sentence(result["config"]) + " "
         "Networks in relucut's exported form. Time: the busier party's CPU seconds; time, bytes and rounds are "
         "means over every warm run. The poly2 terms are fitted by `relucut.pi.calibrate.calibrate_kinds` on what "
         "the shipped spu-cheetah terms leave of the in-sample rows."),
        "",
        *spu_bench.KIND_COSTS_HEADER,
        spu_bench.kind_costs_line(KIND, c, result["relu_equivalents"]),
        "",
        spu_bench.fit_quality(fit) + ".",
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
    lines += ["", *spu_bench.worst_error_lines(result, "without_poly",
                                               "the poly2 terms (polynomials priced as free)")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    spu_bench.main("spu_poly", __doc__.splitlines()[0], measure_missing, analyse, markdown)
