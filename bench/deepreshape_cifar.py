"""DeepReShape at CPU scale on real CIFAR-10: a HybReNet design vs ResNet18 at equal ReLU budgets.

Splits (the shared data's README): train = a prefix of the first 45,000 images, validation (model
selection) = images 44,000-44,999, test = the held-out last 5,000 (second half of data_batch_5).
Writes bench/results/<--name>.{json,md} (default deepreshape_cifar10); the run dirs under --out make it resume.

    nice -n 10 .venv/bin/python bench/deepreshape_cifar.py --data-dir /work/shared/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from relucut.data.cifar import load_cifar
from relucut.data.splits import DataSplits, channel_stats
from relucut.deepreshape.equalize import parse_order
from relucut.deepreshape.pipeline import PipelineSettings, train_designs
from relucut.methods.snl import SNLConfig
from relucut.plan import atomic_write_text
from relucut.train import TrainConfig

TRAIN_POOL, HELD_OUT = 45_000, 5_000
VAL = slice(44_000, 45_000)


def cifar_splits(root: str) -> DataSplits:
    """Train = images 0..43,999 (a run takes its first ``limit_train``), val and test as above."""
    full, _, classes = load_cifar("cifar10", Path(root))
    if len(full) != TRAIN_POOL + HELD_OUT:
        raise SystemExit(f"expected 50,000 training-file images, found {len(full)}")
    pool = full.subset(list(range(TRAIN_POOL)))
    mean, std = channel_stats(pool.images)
    return DataSplits(
        "cifar10", 10, full.subset(list(range(VAL.start))), full.subset(list(range(VAL.start, VAL.stop))),
        full.subset(list(range(TRAIN_POOL, TRAIN_POOL + HELD_OUT))), mean, std, classes,
    )


def markdown(rows: list[dict], args: argparse.Namespace, wall: float) -> str:
    fine = ("; low budgets reached with SNL pixel masks (search and KD fine-tuning of --epochs each, after "
            "an all-ReLU base of --epochs; SNL's own lr 0.01)") if args.fine_grained else ""
    lines = [
        "# DeepReShape vs ResNet18 at equal ReLU budgets (CPU scale, CIFAR-10)",
        "",
        f"Scale: {args.train_images:,} training images (first of the 45,000), {args.epochs} epochs, batch "
        f"{args.batch_size}, SGD lr {args.lr} cosine, crop+flip, seed {args.seed}; validation 1,000 "
        f"(images 44,000-44,999) picks the epoch; test = the held-out last 5,000. Order {args.order}, "
        f"min width {args.min_width}{fine}. Wall {wall / 60:.1f} min (2 shared CPU cores, nice 10).",
        "",
        "| budget | network | design | ReLUs | MACs | test acc % | train s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cut = "+".join(s for s in r["culled"] if s != "stem")
        edits = (f", cull {cut}" if cut else "") + (f", thin {'+'.join(r['thinned'])}" if r["thinned"] else "")
        edits += f", {r['method']} to the budget" if r.get("method") else ""
        lines.append(
            f"| {r['budget']:,} | {r['role']} | {r['model']} m={r['base_width']}{edits} | {r['relus']:,} | "
            f"{r['macs'] / 1e6:.1f}M | {100 * r['test_acc']:.2f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/work/shared/data/cifar-10-batches-py")
    ap.add_argument("--model", default="hrn_5x5x3x")
    ap.add_argument("--budgets", default="25000,50000")
    ap.add_argument("--order", default="s3,s2,s4,s1")
    ap.add_argument("--min-width", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=5_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_deepreshape")
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--name", default="deepreshape_cifar10", help="Stem of the result files.")
    ap.add_argument("--fine-grained", action="store_true",
                    help="Low budgets: SNL masks on the design's network instead of culling/thinning.")
    args = ap.parse_args()
    if not 2 <= args.train_images <= VAL.start:
        raise SystemExit(f"--train-images must be in [2, {VAL.start}] (the validation images follow)")

    started = time.perf_counter()
    settings = PipelineSettings(
        model=args.model, budgets=[int(b) for b in args.budgets.split(",")], order=list(parse_order(args.order, 4)),
        min_width=args.min_width, input_size=(3, 32, 32), num_classes=10, fine_grained=args.fine_grained,
    )
    config = TrainConfig(dataset="cifar10", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         schedule="cosine", seed=args.seed, device="cpu", limit_train=args.train_images)
    def snl_config(budget: int, epochs: int) -> SNLConfig:  # --fine-grained: SNL at the design's budget
        return SNLConfig(budget=budget, granularity="pixel", search_epochs=epochs, finetune_epochs=epochs)

    rows = train_designs(settings, config, args.out, data=cifar_splits(args.data_dir), snl_config=snl_config)
    wall = time.perf_counter() - started
    results = Path(args.results)
    atomic_write_text(results / f"{args.name}.json", json.dumps(
        {"args": vars(args), "settings": settings.to_dict(), "train": config.to_dict(), "rows": rows,
         "wall_seconds": wall}, indent=1))
    atomic_write_text(results / f"{args.name}.md", markdown(rows, args, wall))
    print(markdown(rows, args, wall))


if __name__ == "__main__":
    main()
