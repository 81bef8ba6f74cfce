"""SNL, SENet and SENet + shallow (gated branching + AC) on the real CIFAR-10 images, CPU scale.

Split: the first 45,000 training images are the training set (of which the first N are used for
training and the next 1,000 for validation, which picks each stage's best epoch), the last 5,000
(second half of data_batch_5) are the held-out test set, only evaluated. Every stage runs on the
training engine (relucut.train). Scale, matched to bench/deepreduce_cifar10.py so ReLU counts line up: ResNet18, base
width 8, inputs down-scaled to 16x16 (rho 0.5): 17,408 ReLUs. Budgets 3,584 and 7,168 are
DeepReDuce's culled/thinned counts at this scale. One CPU thread (several times faster than two
on the shared box). Resumable: finished runs are skipped on a rerun.

    nice -n 10 .venv/bin/python bench/finegrained_cifar10.py
    nice -n 10 .venv/bin/python bench/finegrained_cifar10.py --iso-relu --budgets 3584  # GB at iso-ReLU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from relucut.data.cifar import load_cifar
from relucut.data.splits import DataSplits, channel_stats
from relucut.finegrained.pipeline import base_config, base_model, run_senet, run_snl
from relucut.finegrained.senet import SENetConfig
from relucut.finegrained.snl import SNLConfig
from relucut.models.registry import ModelSpec
from relucut.plan import atomic_write_text

SOURCE = Path("/work/shared/data/cifar-10-batches-py")
RESULTS = Path(__file__).parent / "results"
SPEC = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8, "rho": 0.5})


def cifar_data(train_images: int) -> DataSplits:
    full, _, _ = load_cifar("cifar10", SOURCE)
    train = full.subset(torch.arange(45_000))
    mean, std = channel_stats(train.images)
    return DataSplits("cifar10", 10, train.subset(torch.arange(train_images)),
                      train.subset(torch.arange(train_images, train_images + 1000)),
                      full.subset(torch.arange(45_000, 50_000)), mean, std)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/relucut-bench/finegrained-cifar10")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--budgets", default="3584,7168")
    parser.add_argument("--base-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs of every method")
    parser.add_argument("--mask-epochs", type=int, default=2, help="SENet stage 2")
    parser.add_argument("--search-epochs", type=int, default=5, help="SNL search, at most")
    parser.add_argument("--iso-relu", action="store_true",
                        help="only SENet with and without gated branching at the same final ReLU count")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(args.out)
    data = cifar_data(args.train_images)
    from relucut.train import TrainConfig

    engine = base_config(SPEC, data, TrainConfig(epochs=args.base_epochs, batch_size=64, device="cpu"))
    base = base_model(engine, data, out, None, progress=False)
    e = args.epochs
    milestones = [e // 2, (7 * e) // 9, (8 * e) // 9]  # 90/140/160 of 180, scaled
    if args.iso_relu:
        iso_relu(args, out, data, engine, base, milestones, started)
        return
    results = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        # d_th = the mean fraction of ReLUs kept (paper: 0.05 at 4.5% kept, 0.1 at 15%: 0.7-1.1x the mean)
        dth = round(budget / 17_408, 2)
        runs = {
            "snl-pixel": lambda d, budget=budget: run_snl(SPEC, data, d, SNLConfig(
                budget=budget, search_epochs=args.search_epochs, finetune_epochs=e, milestones=milestones[:2], mask_lr=0.02,
                check_every=10, l1_init=0.1), base=engine, teacher=base, progress=False),
            "snl-channel": lambda d, budget=budget: run_snl(SPEC, data, d, SNLConfig(
                budget=budget, granularity="channel", search_epochs=args.search_epochs, finetune_epochs=e,
                milestones=milestones[:2], mask_lr=0.02, check_every=10, l1_init=0.1),
                base=engine, teacher=base, progress=False),
            "senet": lambda d, budget=budget: run_senet(SPEC, data, d, SENetConfig(
                budget=budget, mask_epochs=args.mask_epochs, finetune_epochs=e, milestones=milestones),
                base=engine, teacher=base, progress=False),
            "senet-shallow-ac": lambda d, budget=budget, dth=dth: run_senet(SPEC, data, d, SENetConfig(
                budget=budget, mask_epochs=args.mask_epochs, finetune_epochs=e, milestones=milestones,
                shallow=True, dth=dth, aux_after="s3"), base=engine, teacher=base, progress=False),
        }
        for name, run in runs.items():
            run_dir = out / f"{name}-{budget}"
            done = run_dir / "result.json"
            result = json.loads(done.read_text()) if done.is_file() else run(run_dir)
            result["run"] = name
            if name.startswith("senet-shallow"):
                result["dth"] = dth
            results.append(result)
            print(name, budget, json.dumps(result["result"]), flush=True)
    write_results(results, args, time.perf_counter() - started)


def iso_relu(args, out: Path, data: DataSplits, engine, base, milestones: list[int], started: float) -> None:
    """SENet + GB at each budget, then SENet without GB at the ReLU count GB ended with: the paper's
    Table 1 comparison (same ReLUs, GB shallower). Writes finegrained_iso_relu_cifar10.{json,md}."""
    e, rows = args.epochs, []
    for budget in [int(b) for b in args.budgets.split(",")]:
        dth = round(budget / 17_408, 2)  # as in main(): the mean fraction of ReLUs kept
        gb_dir = out / f"iso-senet-gb-{budget}"
        gb = _cached(gb_dir, lambda d: run_senet(SPEC, data, d, SENetConfig(
            budget=budget, mask_epochs=args.mask_epochs, finetune_epochs=e, milestones=milestones,
            shallow=True, dth=dth), base=engine, teacher=base, progress=False))
        relus = gb["result"]["relus"]
        plain = _cached(out / f"iso-senet-{relus}", lambda d: run_senet(SPEC, data, d, SENetConfig(
            budget=relus, mask_epochs=args.mask_epochs, finetune_epochs=e, milestones=milestones),
            base=engine, teacher=base, progress=False))
        rows.append({"budget": budget, "dth": dth, "with_gb": gb, "without_gb": plain})
        print(budget, json.dumps(gb["result"]), json.dumps(plain["result"]), flush=True)
    seconds = time.perf_counter() - started
    atomic_write_text(RESULTS / "finegrained_iso_relu_cifar10.json", json.dumps(
        {"setting": {"model": SPEC.to_dict(), "train_images": args.train_images, "base_epochs": args.base_epochs,
                     "finetune_epochs": e, "senet_mask_epochs": args.mask_epochs, "threads": 1, "seeds": [0]},
         "rows": rows, "seconds": seconds}, indent=1))
    base_row = rows[0]["with_gb"]["baseline"]
    lines = ["# SENet with and without gated branching at the same ReLU count (CIFAR-10, CPU scale)", "",
             f"ResNet18, base width 8, 16x16 inputs: {base_row['relus']:,} ReLUs. All-ReLU base (the teacher): "
             f"{args.base_epochs} epochs on the first {args.train_images:,} training images, "
             f"{100 * base_row['test_acc']:.2f}% on the held-out last 5,000. SENet: {args.mask_epochs} mask epochs, "
             f"{e} fine-tuning epochs, one seed, one CPU thread. GB decides per ReLU layer (inner ReLU below d_th: "
             "conv-BN + shortcut; post-add ReLU below d_th: dropped); SENet without GB is then run to the ReLU "
             "count GB ended with.", "",
             "| start budget | d_th | network | #ReLUs | w/o stem | test acc % | conv depth | MACs |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for name, res in (("SENet + GB", r["with_gb"]), ("SENet (no GB), same ReLUs", r["without_gb"])):
            c = res["result"]
            lines.append(f"| {r['budget']:,} | {r['dth']} | {name} | {c['relus']:,} | {c['relus_without_stem']:,} | "
                         f"{100 * c['test_acc']:.2f} | {c['conv_depth']} | {c['macs'] / 1e6:.2f}M |")
        gb = r["with_gb"]
        lines.append(f"\nBudget {r['budget']:,}: shallow blocks {', '.join(gb['shallow_blocks']) or 'none'}; "
                     f"post-add ReLUs dropped: {', '.join(gb.get('faded_sites') or []) or 'none'}.")
    lines.append(f"\nWall time: {seconds / 60:.1f} min (finished runs are reused).")
    atomic_write_text(RESULTS / "finegrained_iso_relu_cifar10.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _cached(run_dir: Path, run) -> dict:
    done = run_dir / "result.json"
    return json.loads(done.read_text()) if done.is_file() else run(run_dir)


def _deepreduce_points() -> list[dict]:
    path = RESULTS / "deepreduce_cifar10.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data.get("frontier", [])


def write_results(results: list[dict], args, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    setting = {"model": SPEC.to_dict(), "relus_full": 17_408, "train_images": args.train_images,
               "held_out": "last 5,000 of the 50,000 training images (never used for selection)",
               "base_epochs": args.base_epochs, "finetune_epochs": args.epochs, "senet_mask_epochs": args.mask_epochs,
               "snl_search_epochs_max": args.search_epochs, "threads": 1}
    atomic_write_text(RESULTS / "finegrained_cifar10.json",
                      json.dumps({"setting": setting, "results": results, "seconds": seconds}, indent=1))
    base = results[0]["baseline"]
    lines = [
        "# SNL, SENet and SENet + shallow on CIFAR-10 at CPU scale", "",
        f"ResNet18, base width 8, 16x16 inputs (rho 0.5): {base['relus']:,} ReLUs, {base['macs'] / 1e6:.2f}M MACs, "
        f"conv depth {base['conv_depth']}. Trained on the first {args.train_images:,} of the first 45,000 CIFAR-10 "
        f"training images; accuracy on the held-out last 5,000. All-ReLU base: {args.base_epochs} epochs, "
        f"{100 * base['test_acc']:.2f}%. Each method: KD from that base, {args.epochs} fine-tuning epochs "
        f"(SENet: {args.mask_epochs} mask epochs first; SNL: up to {args.search_epochs} search epochs first). "
        "One CPU thread.", "",
        "| method | budget | #ReLUs | accuracy % | conv depth | MAC saving | ReLU reduction |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rows = [(r["run"], r["result"])]
        if r.get("masks_only"):
            same = next((o for o in results if o["run"] == "senet" and o["budget"] == r["budget"]), None)
            without = {**r["masks_only"], "test_acc": same["result"]["test_acc"] if same else None}
            rows[0] = (r["run"] + " (w/ GB)", r["result"])
            rows.insert(0, ("senet-shallow-ac (w/o GB = the senet run)", without))
        if r.get("ac_output"):
            rows.append((r["run"] + " (AC output)", r["ac_output"]))
        for name, c in rows:
            acc = "-" if c["test_acc"] is None else f"{100 * c['test_acc']:.2f}"
            lines.append(f"| {name} | {r['budget']:,} | {c['relus']:,} | {acc} | {c['conv_depth']} "
                         f"| {c['mac_saving']:.2f}x | {c['relu_reduction']:.2f}x |")
    shallow = [r for r in results if r.get("shallow_blocks") is not None and r["run"].startswith("senet-shallow")]
    for r in shallow:
        sens = ", ".join(f"{b} {d:.3f}" for b, d in r["block_sensitivity"].items())
        lines.append(f"\nBudget {r['budget']:,}, d_th {r.get('dth')}: blocks made shallow: "
                     f"{', '.join(r['shallow_blocks']) or 'none'} (block ReLU sensitivity: {sens}).")
    points = _deepreduce_points()
    if points:
        lines += ["", "## DeepReDuce frontier at this scale (bench/results/deepreduce_cifar10.json)", "",
                  "| network | #ReLUs | test accuracy % |", "| --- | ---: | ---: |"]
        for p in points:
            acc = p.get("test_acc")  # already in percent
            lines.append(f"| {p.get('name', p.get('label', '?'))} | {p.get('relus', 0):,} | "
                         f"{'-' if acc is None else f'{acc:.2f}'} |")
        lines += ["", "DeepReDuce's networks were trained far less (teacher 4 epochs, 36.5% test; candidates 3 "
                  "epochs) than this run's base (see above), so the gap mixes method and training budget."]
    else:
        lines += ["", "DeepReDuce's results (bench/results/deepreduce_cifar10.json) were not there when this ran."]
    run_minutes = sum(r.get("seconds", 0) for r in results) / 60
    lines.append(f"\nWall time of the method runs: {run_minutes:.1f} min (nice'd, on a shared 2-core box); "
                 f"this invocation {seconds / 60:.1f} min (finished runs are reused).")
    atomic_write_text(RESULTS / "finegrained_cifar10.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
