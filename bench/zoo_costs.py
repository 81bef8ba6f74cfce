"""What torchvision's and timm's ImageNet networks cost, counted three ways and priced by every engine.

Per network (random weights, one 3x224x224 input): relucut's per-kind counts and MACs
(``relucut.count``) against a forward-hook count that never uses torch.fx (activation and norm
modules by type, max-pool windows, conv/linear MACs from their shapes, attention and squeeze-excite
products from their modules' inputs), and against the MACs torchvision publishes (its weights'
``_ops`` metadata, the GFLOPS column of its documentation); then each ``relucut.pi`` engine's
estimate with the share of the non-linear elements it prices, marked as a lower bound when a kind
is left unpriced.

torchvision and timm are not relucut dependencies: run this in a separate environment that has them
(torch 2.14.1, torchvision 0.29.1, timm; relucut installed with ``pip install -e . --no-deps``):

    /work/tvenv/bin/python bench/zoo_costs.py            # -> bench/results/zoo_costs.{json,md}
    PYTHONPATH=/other/checkout/src /work/tvenv/bin/python bench/zoo_costs.py --out before  # another relucut
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

import relucut
from relucut.pi import estimate, profile_names

RESULTS = Path(__file__).parent / "results"
SIZE = (3, 224, 224)
NETWORKS = [("torchvision", n) for n in ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
                                         "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "vgg11_bn",
                                         "convnext_tiny", "vit_b_16")] + [("timm", "vit_base_patch16_224")]
ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
               nn.SiLU: "silu", nn.Sigmoid: "sigmoid", nn.GELU: "gelu", nn.Softmax: "softmax", nn.LayerNorm: "layernorm"}


def build(source: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None).eval()
    import timm

    return timm.create_model(name, pretrained=False).eval()


def published_gmacs(source: str, name: str) -> float | None:
    if source != "torchvision":
        return None
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT.meta.get("_ops")


def _add(counts: dict, kind: str, n: int) -> None:
    if n:
        counts[kind] = counts.get(kind, 0) + int(n)


@torch.no_grad()
def hook_count(model: nn.Module) -> tuple[dict[str, int], int]:
    """Per kind (elements; max-pool in comparisons, matmul in MACs) and MACs, from forward hooks only."""
    counts: dict[str, int] = {}
    macs = [0]

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        kind = next((k for t, k in ACTIVATIONS.items() if isinstance(module, t)), None)
        if kind:
            _add(counts, kind, out.numel())
        if isinstance(module, nn.MaxPool2d):
            k = module.kernel_size
            _add(counts, "maxpool", out.numel() * ((k * k if isinstance(k, int) else math.prod(k)) - 1))
        elif isinstance(module, nn.Conv2d):
            macs[0] += out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            macs[0] += out.numel() * module.in_features
        elif isinstance(module, nn.MultiheadAttention):
            q, k = inputs[0], inputs[1]
            seq_q, seq_k = (q.shape[1], k.shape[1]) if module.batch_first else (q.shape[0], k.shape[0])
            _add(counts, "softmax", module.num_heads * seq_q * seq_k)
            _add(counts, "matmul", 2 * seq_q * seq_k * module.embed_dim)  # Q.K^T and A.V over all heads
            # in_proj (q, k, v), out_proj, and the two products of activations
            macs[0] += 4 * seq_q * module.embed_dim * module.embed_dim + 2 * seq_q * seq_k * module.embed_dim
        elif type(module).__name__ == "Attention" and hasattr(module, "num_heads"):  # timm: fused SDPA
            tokens, dim = inputs[0].shape[1], inputs[0].shape[2]
            _add(counts, "softmax", module.num_heads * tokens * tokens)
            _add(counts, "matmul", 2 * tokens * tokens * dim)
            macs[0] += 2 * tokens * tokens * dim
        elif "SqueezeExc" in type(module).__name__ or type(module).__name__ == "SEModule":
            _add(counts, "mul", out.numel())  # the gate times the feature map

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(torch.zeros(1, *SIZE))
    finally:
        for h in handles:
            h.remove()
    return counts, macs[0]


def relucut_counts(report) -> dict[str, int]:
    by_kind = {k: v for k, v in report.nonlinear_by_kind.items() if v}
    return by_kind


def row(source: str, name: str) -> dict:
    model = build(source, name)
    t0 = time.perf_counter()
    report = relucut.count(model, SIZE)
    count_s = time.perf_counter() - t0
    hooked, hook_macs = hook_count(model)
    counts = relucut_counts(report)
    estimates = {}
    for engine in profile_names():
        est = estimate(report, engine)
        estimates[engine] = {"online_s": est.online_s, "total_s": est.total_s, "online_bytes": est.online_bytes,
                             "total_bytes": est.total_bytes, "lower_bound": getattr(est, "lower_bound", None),
                             "priced_share": getattr(est, "priced_share", None),
                             "unpriced": getattr(est, "unpriced", {k: None for k in est.unpriced_kinds})}
    return {
        "source": source, "name": name, "input_size": list(SIZE), "count_s": count_s,
        "relus": report.relus, "comparisons": report.comparisons, "by_kind": counts, "hook_by_kind": hooked,
        "kinds_equal_hooks": counts == hooked, "macs": report.macs, "hook_macs": hook_macs,
        "published_gmacs": published_gmacs(source, name),
        "macs_by_stage": report.macs_by_stage, "estimates": estimates,
    }


def _g(n: float) -> str:
    return f"{n / 1e9:.2f}G"


def _n(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}K"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {_n(v)}" for k, v in counts.items())


def markdown(rows: list[dict], source: str) -> str:
    engines = list(rows[0]["estimates"])
    lines = [
        "# torchvision and timm networks: counts, MACs and private-inference estimates",
        "",
        f"relucut from `{source}` (bench/zoo_costs.py).",
        "",
        "One 3x224x224 input, random weights. `by kind`: relucut's non-linear elements per kind (max-pool in",
        "comparisons, matmul = activation x activation MACs); `= hooks`: the same as a forward-hook count that",
        "does not use torch.fx. MACs: relucut, the hook count, and torchvision's published GFLOPS (`_ops`).",
        "",
        "| network | by kind | = hooks | MACs | hook MACs | published |",
        "| --- | --- | :---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        pub = f"{r['published_gmacs']:.2f}G" if r["published_gmacs"] else "—"
        equal = "yes" if r["kinds_equal_hooks"] else f"no (hooks: {_kinds(r['hook_by_kind'])})"
        lines.append(f"| {r['source']} {r['name']} | {_kinds(r['by_kind'])} | {equal} | {_g(r['macs'])} | "
                     f"{_g(r['hook_macs'])} | {pub} |")
    lines += [
        "",
        "Each engine's estimate at its default link and threads: online seconds / total seconds, and the share of",
        "the non-linear elements (comparisons + per-element kinds; matmul MACs aside) that the engine prices.",
        "`>=`: some kind is unpriced, the estimate is a lower bound (unpriced kinds listed below the table).",
        "",
        "| network | " + " | ".join(engines) + " |",
        "| --- | " + " | ".join("---:" for _ in engines) + " |",
    ]
    unpriced_notes = []
    for r in rows:
        cells, left_out = [], {}
        for engine in engines:
            e = r["estimates"][engine]
            bound = ">=" if e["lower_bound"] else ""
            share = f", {100 * e['priced_share']:.0f} %" if e["priced_share"] is not None else ""
            cells.append(f"{bound}{e['online_s']:.2f} / {bound}{e['total_s']:.1f} s{share}")
            if e["unpriced"]:
                text = ", ".join(f"{k} {_n(v)}" if v is not None else k for k, v in e["unpriced"].items())
                left_out.setdefault(text, []).append(engine)
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        unpriced_notes += [f"- {r['name']}: {text} ({', '.join(names)})" for text, names in left_out.items()]
    if unpriced_notes:
        lines += ["", "Unpriced kinds (elements; matmul in MACs) and the engines that leave them out:", "",
                  *unpriced_notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="zoo_costs", help="results/<out>.{json,md}")
    parser.add_argument("--only", default=None, help="comma-separated network names")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.markdown_only:
        payload = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(markdown(payload["rows"], payload["relucut"]))
        return
    torch.set_num_threads(1)
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for source, name in NETWORKS:
        if wanted and name not in wanted:
            continue
        try:
            rows.append(row(source, name))
        except Exception as exc:  # noqa: BLE001 (a network that does not load here is reported, not fatal)
            print(f"{source} {name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            continue
        r = rows[-1]
        print(f"{source} {name}: MACs {_g(r['macs'])} (hooks {_g(r['hook_macs'])}, published {r['published_gmacs']}), "
              f"kinds equal hooks: {r['kinds_equal_hooks']}, counted in {r['count_s']:.1f} s")
    RESULTS.mkdir(exist_ok=True)
    payload = {"relucut": str(Path(relucut.__file__).parent), "torch": torch.__version__, "rows": rows}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, payload["relucut"]))


if __name__ == "__main__":
    main()
