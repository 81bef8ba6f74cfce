"""Price GELU, SiLU, sigmoid, Hardswish, Hardsigmoid, softmax, LayerNorm and products of two activations
under SPU the way the ReLU terms were fitted, and check the prices on networks the fit never saw.

Every network runs under SecretFlow SPU 0.9.5 (Cheetah, two processes on 127.0.0.1, public weights),
as in bench/spu_calibration.py. The fit set has one per-element kind per network, in token MLPs
(Linear -> kind -> Linear, one or two layers, 1K-16K elements; for ``mul`` two projections
multiplied, for ``matmul`` Q·Kᵀ and (Q·Kᵀ)·V); `relucut.pi.calibrate.calibrate_kinds` fits each
kind's seconds and bytes per element, seconds per layer and rounds per layer on what the shipped
spu-cheetah terms (ReLUs, MACs, truncations, layers) leave of each measurement. The check set is
blocks of the networks that use these kinds, at other sizes: a ViT block, an EfficientNet MBConv
(SiLU, squeeze-excite), a MobileNetV3 block (Hardswish, Hardsigmoid gate) and a ConvNeXt block.

Each figure is the mean over every warm run, the busier party's CPU seconds for time: these kinds draw
on SPU's pools of OT and multiplication correlations so fast that a refill (about 1 MB, a thousand
messages and seconds for exp-based kinds) comes every one to three runs, so the amortised cost is the
per-element cost (bench/spu_calibration.py left the rarer refills of ReLU networks out). Resumable:
measured networks are kept in
results/spu_kinds.pass<N>.json and skipped; ``--pass 2`` measures every network again at another
time and the analysis pools the warm runs of all passes.

    nice -n 10 .venv/bin/python bench/spu_kinds.py [--runs 4] [--pass 2]
    .venv/bin/python bench/spu_kinds.py --analyse-only
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
from relucut.pi import Workload, estimate, get_profile
from relucut.pi.calibrate import calibrate_kinds, measurement_row
from relucut.pi.measure import measure_many
from relucut.rundir import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
TARGET = 0.25  # out of sample, estimated / measured - 1 for time and bytes each
KINDS = ("gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "softmax", "layernorm", "mul", "matmul")
console = Console()


class KindMLP(nn.Module):
    """Linear(width -> hidden) -> kind -> Linear(hidden -> width), ``layers`` times."""

    def __init__(self, kind: str, width: int, hidden: int, layers: int):
        super().__init__()
        self.kind = kind
        self.up = nn.ModuleList(nn.Linear(width, hidden) for _ in range(layers))
        self.gate = nn.ModuleList(nn.Linear(width, hidden) for _ in range(layers)) if kind == "mul" else None
        self.act = nn.ModuleList(_activation(kind, hidden) for _ in range(layers)) if kind != "mul" else None
        self.down = nn.ModuleList(nn.Linear(hidden, width) for _ in range(layers))

    def forward(self, x):
        for i, (up, down) in enumerate(zip(self.up, self.down)):
            h = up(x) * self.gate[i](x) if self.kind == "mul" else self.act[i](up(x))
            x = down(h)
        return x


def _activation(kind: str, hidden: int) -> nn.Module:
    return {"gelu": nn.GELU(), "silu": nn.SiLU(), "sigmoid": nn.Sigmoid(), "hardswish": nn.Hardswish(),
            "hardsigmoid": nn.Hardsigmoid(), "softmax": nn.Softmax(dim=-1), "layernorm": nn.LayerNorm(hidden)}[kind]


class Scores(nn.Module):
    """Q·Kᵀ (one layer) or (Q·Kᵀ)·V (two) at an inner width: products of two activations."""

    def __init__(self, width: int, layers: int, inner: int = 128):
        super().__init__()
        self.layers = layers
        self.q, self.k, self.v = nn.Linear(width, inner), nn.Linear(width, inner), nn.Linear(width, inner)

    def forward(self, x):
        s = self.q(x) @ self.k(x).transpose(-2, -1)
        return s @ self.v(x) if self.layers == 2 else s


class ViTBlock(nn.Module):
    """LN -> single-head attention (scaled, softmax) -> residual; LN -> MLP (GELU) -> residual."""

    def __init__(self, width: int = 32, hidden: int = 96):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)
        self.scale = width ** -0.5

    def forward(self, x):
        h = self.ln1(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(-2, -1) * self.scale, dim=-1)
        x = x + self.o(att @ self.v(h))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class MBConv(nn.Module):
    """EfficientNet's block: expand, SiLU, depthwise, SiLU, squeeze-excite (SiLU, sigmoid gate), project."""

    def __init__(self, channels: int = 16, expand: int = 4, hard: bool = False):
        super().__init__()
        wide = channels * expand
        act = nn.Hardswish if hard else nn.SiLU
        self.expand = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.BatchNorm2d(wide), act())
        self.depthwise = nn.Sequential(nn.Conv2d(wide, wide, 3, padding=1, groups=wide, bias=False),
                                       nn.BatchNorm2d(wide), act())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.se_act = nn.Conv2d(wide, channels // 2, 1), (nn.ReLU() if hard else nn.SiLU())
        self.restore, self.gate = nn.Conv2d(channels // 2, wide, 1), (nn.Hardsigmoid() if hard else nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        h = self.depthwise(self.expand(x))
        h = h * self.gate(self.restore(self.se_act(self.reduce(self.pool(h)))))
        return x + self.project(h)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, MLP with GELU, back to channels-first, residual."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.fc1, self.act, self.fc2 = nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.fc2(self.act(self.fc1(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


def _fit_networks():
    nets = []
    for kind in KINDS:
        # the cheap kinds at more elements, so that they, not the linear layers around them, dominate
        hidden = (256, 512) if kind in ("layernorm", "hardswish", "hardsigmoid", "mul") else (64, 128)
        if kind == "matmul":
            nets += [("matmul q.k 16x32", "fit", lambda: Scores(32, 1), (16, 32)),
                     ("matmul q.k 32x32", "fit", lambda: Scores(32, 1), (32, 32)),
                     ("matmul (q.k).v 32x32", "fit", lambda: Scores(32, 2), (32, 32))]
            continue
        nets += [(f"{kind} 16x32 h{hidden[0]}", "fit", lambda k=kind, h=hidden[0]: KindMLP(k, 32, h, 1), (16, 32)),
                 (f"{kind} 32x32 h{hidden[1]}", "fit", lambda k=kind, h=hidden[1]: KindMLP(k, 32, h, 1), (32, 32)),
                 (f"{kind} 32x32 h{hidden[0]} x2", "fit", lambda k=kind, h=hidden[0]: KindMLP(k, 32, h, 2), (32, 32))]
    return nets


# name, set, builder, input size
NETWORKS = _fit_networks() + [
    ("ViT block 24x32 (LN, attention, softmax, GELU)", "check", lambda: ViTBlock(32, 96), (24, 32)),
    ("MBConv 16x8x8 (SiLU, SE sigmoid gate)", "check", lambda: MBConv(16, 4), (16, 8, 8)),
    ("MobileNetV3 block 16x8x8 (Hardswish, SE Hardsigmoid gate)", "check", lambda: MBConv(16, 4, hard=True),
     (16, 8, 8)),
    ("ConvNeXt block 32x8x8 (LN, GELU)", "check", lambda: ConvNeXtBlock(32), (32, 8, 8)),
]


def build(net, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = net[2]().eval()
    for module in model.modules():  # non-trivial BN statistics, so folding is exercised
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model


def workload_of(net) -> Workload:
    return Workload.of(relucut.count(build(net), net[3]))


def amortised(m: dict) -> dict:
    """Mean over every warm run (pool refills included): CPU seconds of the busier party, bytes, rounds;
    and the fastest wall time, for comparison."""
    runs = m["warm_runs"]
    return {"cpu_s": float(np.mean([max(r["cpu_s_by_party"]) for r in runs])),
            "online_bytes": float(np.mean([r["bytes"] for r in runs])),
            "rounds": float(np.mean([max(r["messages_by_party"]) for r in runs])),
            "wall_s": min(r["wall_s"] for r in runs), "runs": len(runs)}


def measure_missing(done: dict, runs: int, partial: Path, chunk: int = 4) -> None:
    """Measures the networks not in ``done``, a few at a time in one SPU process pair per input size."""
    by_size: dict[tuple, list] = {}
    for net in NETWORKS:
        if net[0] not in done["rows"]:
            by_size.setdefault(net[3], []).append(net)
    for size, all_nets in by_size.items():
        for nets in (all_nets[i: i + chunk] for i in range(0, len(all_nets), chunk)):
            _measure_chunk(done, nets, size, runs, partial)


def _measure_chunk(done: dict, nets: list, size: tuple, runs: int, partial: Path) -> None:
    t0 = time.perf_counter()
    results = measure_many([build(n) for n in nets], size, mode="public-weights", runs=runs, timeout=3000)
    console.print(f"[dim]{len(nets)} networks at {size} in {time.perf_counter() - t0:.0f} s[/]")
    for net, m in zip(nets, results):
        row = m.to_dict()
        warm = row["meta"].pop("runs")[1:]
        row["warm_runs"] = [{"wall_s": r["wall_s"], "bytes": r["bytes"], "cpu_s_by_party": r["cpu_s_by_party"],
                             "messages_by_party": r["messages_by_party"]} for r in warm]
        done["rows"][net[0]] = row
        atomic_write_json(partial, done)
        console.print(f"{net[0]}: {m.kinds}, warm min CPU {min(max(r['cpu_s_by_party']) for r in warm):.3f} s, "
                      f"{m.warm.bytes / 1e6:.3f} MB, matches={m.matches} (max err {m.max_abs_error:.1e})")


def pooled_passes() -> dict:
    passes = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("spu_kinds.pass*.json"))]
    if not passes:
        raise SystemExit("no measurements yet: run bench/spu_kinds.py without --analyse-only")
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


def analyse(done: dict) -> dict:
    shipped = get_profile("spu-cheetah")
    base = replace(shipped, kind_costs={})  # the ReLU-era terms only
    rows = []
    for net in NETWORKS:
        if net[0] not in done["rows"]:
            continue
        m = done["rows"][net[0]]
        work = workload_of(net)
        assert work.smooth == m["kinds"], (net[0], work.smooth, m["kinds"])
        typical = amortised(m)
        rows.append((net, work, m, {**measurement_row(work), "online_s": typical["cpu_s"],
                                    "online_bytes": typical["online_bytes"], "rounds": typical["rounds"]}, typical))
    fitted, fit = calibrate_kinds([r for net, _, _, r, _ in rows if net[1] == "fit"], base, "spu-cheetah-kinds")
    table = []
    for net, work, m, row, typical in rows:
        out = {"network": net[0], "set": "in-sample" if net[1] == "fit" else "out-of-sample",
               "input": list(net[3]), **measurement_row(work), "measured_s": row["online_s"],
               "measured_wall_s": typical["wall_s"], "measured_bytes": row["online_bytes"],
               "measured_rounds": row["rounds"], "warm_runs": typical["runs"],
               "matches_pytorch": m["matches"], "max_abs_error": m["max_abs_error"]}
        for label, prof in (("fit", fitted), ("shipped", shipped), ("without_kinds", base)):
            est = estimate(work, prof, rtt_s=0.0, threads=1)
            out[f"{label}_s"], out[f"{label}_bytes"], out[f"{label}_rounds"] = est.online_s, est.online_bytes, \
                est.online_rounds
            out[f"{label}_time_ratio"] = est.online_s / row["online_s"]
            out[f"{label}_bytes_ratio"] = est.online_bytes / row["online_bytes"]
            out[f"{label}_rounds_ratio"] = est.online_rounds / row["rounds"]
        table.append(out)

    def worst(key: str, subset: str) -> float:
        return max((abs(r[key] - 1) for r in table if r["set"] == subset), default=float("nan"))

    keys = ("fit_time", "fit_bytes", "fit_rounds", "without_kinds_time", "without_kinds_bytes")
    relu = {"online_s": shipped.relu_online_s, "online_bytes": shipped.relu_online_bytes,
            "rounds_per_layer": shipped.rounds_per_layer, "layer_online_s": shipped.layer_online_s}
    ratios = {k: {term: (v / relu[term] if relu.get(term) else None) for term, v in c.items()}
              for k, c in fit["kind_costs"].items()}
    return {"config": done["config"], "rows": table, "fit": fit, "kind_costs": fit["kind_costs"],
            "relu_equivalents": ratios, "target": TARGET,
            "worst_out_of_sample": {k: worst(f"{k}_ratio", "out-of-sample") for k in keys},
            "worst_in_sample": {k: worst(f"{k}_ratio", "in-sample") for k in keys}}


def _kinds_text(row: dict) -> str:
    return ", ".join(f"{k[5:]} {int(v):,}" for k, v in row.items() if k.startswith("kind:") and v)


def markdown(result: dict) -> str:
    fit = result["fit"]
    lines = [
        "# Per-element kinds under SPU Cheetah (bench/spu_kinds.py)",
        "",
        (f"SPU 0.9.5, Cheetah, FM64, public weights, two processes on loopback; {result['config']['passes']} pass(es) "
         f"of {result['config']['runs']} runs (the first of each pass holds the OT set-up and is left out)."),
        "Time: the busier party's CPU seconds, bytes and rounds: means over every warm run (refills amortised).",
        "The kind terms are fitted by",
        "`relucut.pi.calibrate.calibrate_kinds` on what the shipped spu-cheetah terms leave of the in-sample rows.",
        "",
        "| kind | us / element | bytes / element | ms / layer | KB / layer | rounds / layer | x ReLU (time, bytes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, c in result["kind_costs"].items():
        ratio = result["relu_equivalents"][kind]
        lines.append(f"| {kind} | {c['online_s'] * 1e6:.2f} | {c['online_bytes']:.1f} | {c['layer_online_s'] * 1e3:.2f} | "
                     f"{c['layer_online_bytes'] / 1e3:.1f} | {c.get('rounds_per_layer', 0):.1f} | "
                     f"{ratio['online_s']:.2f}, {ratio['online_bytes']:.2f} |")
    lines += [
        "",
        (f"Fit: time r² {fit['time_r2']:.4f} (worst {100 * fit['time_max_rel_error']:.1f} %), bytes r² "
         f"{fit['bytes_r2']:.6f} (worst {100 * fit['bytes_max_rel_error']:.1f} %)"
         + (f", rounds r² {fit['rounds_r2']:.4f}" if "rounds_r2" in fit else "") + ". matmul counts MACs."),
        "",
        ("| network | set | kinds (elements) | measured s | fit s | ratio | measured MB | fit MB | ratio | "
         "without kinds: s ratio, bytes ratio |"),
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['network']} | {r['set']} | {_kinds_text(r)} | {r['measured_s']:.3f} | {r['fit_s']:.3f} | "
                     f"{r['fit_time_ratio']:.2f} | {r['measured_bytes'] / 1e6:.3f} | {r['fit_bytes'] / 1e6:.3f} | "
                     f"{r['fit_bytes_ratio']:.3f} | {r['without_kinds_time_ratio']:.2f}, "
                     f"{r['without_kinds_bytes_ratio']:.2f} |")
    w_out, w_in = result["worst_out_of_sample"], result["worst_in_sample"]
    lines += [
        "",
        (f"Worst error out of sample: time {100 * w_out['fit_time']:.1f} %, bytes {100 * w_out['fit_bytes']:.1f} %, "
         f"rounds {100 * w_out['fit_rounds']:.1f} % (target {100 * result['target']:.0f} % for time and bytes); "
         f"in sample: time {100 * w_in['fit_time']:.1f} %, bytes {100 * w_in['fit_bytes']:.1f} %."),
        (f"Without the kind terms (the profile before): out of sample the estimate was off by up to "
         f"{100 * w_out['without_kinds_time']:.0f} % in time and {100 * w_out['without_kinds_bytes']:.0f} % in bytes."),
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
        partial = RESULTS / f"spu_kinds.pass{args.pass_no}.json"
        done = json.loads(partial.read_text()) if partial.exists() else {"config": {"runs": args.runs}, "rows": {}}
        measure_missing(done, args.runs, partial)
    result = analyse(pooled_passes())
    atomic_write_json(RESULTS / "spu_kinds.json", result)
    atomic_write_text(RESULTS / "spu_kinds.md", markdown(result))
    console.print(markdown(result))


if __name__ == "__main__":
    main()
