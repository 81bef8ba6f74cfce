"""SENet stage 1 on a trained ResNet18 at 32x32: per-stage ReLU densities of both allocation rules
beside RLNet's published per-layer lists (issue 22).

A narrow ResNet18 (base width 16 by default, 32x32 inputs: 139,264 ReLUs, a quarter of the full
width's 557,056 in every layer) is trained by the engine on the first N of the first 45,000
CIFAR-10 training images (the next 1,000 validate). Its one-shot pruning sensitivity (density 0.1)
is allocated at RLNet's three budgets scaled to this width (25,330 / 49,968 / 99,987 of 557,056 ReLUs
are 4.5 / 9.0 / 17.9 %), by both rules of ``relucut.finegrained.sensitivity.layer_budgets``:
"count" (layer counts proportional to eta) and "density" (layer fractions proportional to eta).
Each stage's kept fraction and its multiple of the average density stand beside RLNet's.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/senet_allocation.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # RLNet's lists: a test fixture
from finegrained_cifar10 import cifar_data  # noqa: E402
from fixtures.rlnet_allocations import RLNET_DATASET, RLNET_RESNET18  # noqa: E402

from relucut.finegrained.pipeline import base_config, base_model  # noqa: E402
from relucut.finegrained.sensitivity import layer_budgets, relu_sensitivity  # noqa: E402
from relucut.models.registry import ModelSpec  # noqa: E402
from relucut.plan import atomic_write_text  # noqa: E402
from relucut.sites import find_sites  # noqa: E402
from relucut.train import TrainConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FULL_RELUS = 557_056  # ResNet18, width 64, 32x32
STAGES = ("stem", "s1", "s2", "s3", "s4")
RLNET_LISTS = ("25k", "50k", "100k")


def per_stage(sites, kept: dict[str, float]) -> dict[str, float]:
    """Stage -> fraction of its ReLUs kept, from per-site kept counts."""
    got, size = {}, {}
    for s in sites:
        got[s.stage] = got.get(s.stage, 0) + kept[s.name]
        size[s.stage] = size.get(s.stage, 0) + s.numel
    return {st: got[st] / size[st] for st in STAGES}


def rows_for(sites, sensitivity: dict[str, float]) -> list[dict]:
    total = sum(s.numel for s in sites)
    full = ModelSpec("resnet18", num_classes=10)
    full_sites = find_sites(full.build(), full.input_size)
    rows = []
    for name in RLNET_LISTS:
        published = {s.name: d * s.numel for d, s in zip(RLNET_RESNET18[name], full_sites)}
        fraction = sum(published.values()) / FULL_RELUS
        budget = round(fraction * total)
        rows.append({"budget": name, "rule": f"RLNet's list ({RLNET_DATASET[name]})",
                     "relus": round(sum(published.values())), "avg": fraction,
                     "stages": per_stage(full_sites, published)})
        for rule in ("count", "density"):
            alloc = layer_budgets(sites, sensitivity, budget, rule)
            rows.append({"budget": name, "rule": f"relucut '{rule}'", "relus": budget, "avg": budget / total,
                         "stages": per_stage(sites, alloc)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/relucut-bench/senet-allocation")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--density", type=float, default=0.1, help="the pruning probe's parameter density")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    spec = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": args.width})
    data = cifar_data(args.train_images)
    engine = base_config(spec, data, TrainConfig(epochs=args.epochs, batch_size=64, device="cpu",
                                                 seed=args.seed))
    run = Path(args.out) / f"w{args.width}-seed{args.seed}"
    base = base_model(engine, data, run, None, progress=False)
    final = json.loads((run / "base" / "final.json").read_text())
    sites = find_sites(base, spec.input_size)
    sensitivity = relu_sensitivity(base, args.density)
    rows = rows_for(sites, sensitivity)
    setting = {"model": spec.to_dict(), "relus": sum(s.numel for s in sites),
               "train_images": args.train_images,
               "epochs": args.epochs, "density": args.density, "seed": args.seed,
               "base_test_acc": final["test_acc"], "sensitivity": sensitivity}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "senet_allocation.json",
                      json.dumps({"setting": setting, "rows": rows}, indent=1))
    lines = [
        "# SENet stage 1: per-stage ReLU densities against RLNet's published lists", "",
        f"ResNet18, base width {args.width}, 32x32 inputs ({setting['relus']:,} ReLUs, every layer "
        f"{args.width}/64 of the full width's), trained {args.epochs} epochs on the first "
        f"{args.train_images:,} CIFAR-10 training images (seed {args.seed}; test accuracy "
        f"{100 * final['test_acc']:.2f} % on the held-out last 5,000). One-shot pruning sensitivity at "
        f"parameter density {args.density}. RLNet's lists are for the full width (ResNet18, 32x32; its "
        "25k/50k/100k lists are the CIFAR-100 ones); relucut's budgets are the same fractions of this "
        "network's ReLUs. Each cell: the fraction of the stage's ReLUs kept, then its "
        "multiple of the network's average density.", "",
        "| budget | allocation | ReLUs | average density | " + " | ".join(STAGES) + " |",
        "| --- | --- | ---: | ---: |" + " ---: |" * len(STAGES),
    ]
    for r in rows:
        cells = " | ".join(f"{r['stages'][st]:.3f} ({r['stages'][st] / r['avg']:.2f}x)" for st in STAGES)
        lines.append(f"| {r['budget']} | {r['rule']} | {r['relus']:,} | {r['avg']:.3f} | {cells} |")
    minutes = (time.perf_counter() - started) / 60
    lines += ["", f"Wall time {minutes:.1f} min (one thread; a finished base is reused)."]
    atomic_write_text(RESULTS / "senet_allocation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
