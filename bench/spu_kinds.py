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

import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import relucut
from relucut.pi import Workload, get_profile
from relucut.pi.calibrate import calibrate_kinds

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package
import spu_bench
from spu_bench import TARGET, amortised_rows, amortised_table, worst_by_set

KINDS = ("gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "softmax", "layernorm", "mul", "matmul")


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


def measure_missing(done: dict, runs: int, partial: Path) -> None:
    spu_bench.measure_missing(
        done, partial, NETWORKS, runs, build=build, input_size=lambda net: net[3], timeout=3000,
        describe=lambda net, m, row, warm: (
            f"{net[0]}: {m.kinds}, warm min CPU {min(max(r['cpu_s_by_party']) for r in warm):.3f} s, "
            f"{m.warm.bytes / 1e6:.3f} MB, matches={m.matches} (max err {m.max_abs_error:.1e})"))


def analyse(done: dict) -> dict:
    shipped = get_profile("spu-cheetah")
    base = replace(shipped, kind_costs={})  # the ReLU-era terms only
    rows = amortised_rows(NETWORKS, done, workload_of)
    fitted, fit = calibrate_kinds([r for net, _, _, r, _ in rows if net[1] == "fit"], base, "spu-cheetah-kinds")
    table = amortised_table(rows, (("fit", fitted), ("shipped", shipped), ("without_kinds", base)),
                            subset=lambda net: "in-sample" if net[1] == "fit" else "out-of-sample",
                            input_size=lambda net: net[3])
    keys = ("fit_time", "fit_bytes", "fit_rounds", "without_kinds_time", "without_kinds_bytes")
    relu = {"online_s": shipped.relu_online_s, "online_bytes": shipped.relu_online_bytes,
            "rounds_per_layer": shipped.rounds_per_layer, "layer_online_s": shipped.layer_online_s}
    ratios = {k: {term: (v / relu[term] if relu.get(term) else None) for term, v in c.items()}
              for k, c in fit["kind_costs"].items()}
    return {"config": done["config"], "rows": table, "fit": fit, "kind_costs": fit["kind_costs"],
            "relu_equivalents": ratios, "target": TARGET, **worst_by_set(table, keys)}


def _kinds_text(row: dict) -> str:
    return ", ".join(f"{k[5:]} {int(v):,}" for k, v in row.items() if k.startswith("kind:") and v)


def markdown(result: dict) -> str:
    fit = result["fit"]
    lines = [
        "# Per-element kinds under SPU Cheetah (bench/spu_kinds.py)",
        "",
        spu_bench.spu_setup_sentence(result["config"]),
        "Time: the busier party's CPU seconds, bytes and rounds: means over every warm run (refills amortised).",
        "The kind terms are fitted by",
        "`relucut.pi.calibrate.calibrate_kinds` on what the shipped spu-cheetah terms leave of the in-sample rows.",
        "",
        *spu_bench.KIND_COSTS_HEADER,
    ]
    for kind, c in result["kind_costs"].items():
        lines.append(spu_bench.kind_costs_line(kind, c, result["relu_equivalents"][kind]))
    lines += [
        "",
        spu_bench.fit_quality(fit) + ". matmul counts MACs.",
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
    lines += ["", *spu_bench.worst_error_lines(result, "without_kinds", "the kind terms (the profile before)")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    spu_bench.main("spu_kinds", __doc__.splitlines()[0], measure_missing, analyse, markdown)
