"""DeepReDuce on the real CIFAR-10 images at a CPU-feasible scale (a note, not a CI test).

Split: the first 45,000 training images train (a seeded 10% of them validate, for selection),
the last 5,000 (second half of data_batch_5) are the held-out test set. Scale: ResNet18 with base
width 8, inputs down-scaled to 16x16 (rho = 0.5 in the base network, so the candidates' rho = 0.5
gives 8x8), the first 5,000 training images, a few epochs, one CPU thread. Also trains the
paper's Table 2 control: each culled network with alpha = 0.5 instead of thinning (equal ReLUs).

Resumable: rerun the same command after a kill or a timeout and it continues.
    nice -n 10 timeout 540 .venv/bin/python bench/deepreduce_cifar10.py   # repeat until it prints done
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from relucut import ModelSpec
from relucut.deepreduce.candidates import Candidate
from relucut.deepreduce.executors import SequentialExecutor
from relucut.deepreduce.frontier import markdown_table
from relucut.deepreduce.search import Search, SearchSettings
from relucut.plan import atomic_write_text

SOURCE = Path("/work/shared/data/cifar-10-batches-py")
RESULTS = Path(__file__).parent / "results"


def held_out_layout(source: Path, dest: Path) -> Path:
    """Writes CIFAR-10 files whose train set is the first 45,000 images and test set the last 5,000."""
    if (dest / "test_batch").is_file():
        return dest
    tmp = dest.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(1, 6):
        with open(source / f"data_batch_{i}", "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(raw[b"data"]), list(raw[b"labels"])  # only data and labels are used
        parts = {f"data_batch_{i}": (data, labels)}
        if i == 5:
            parts = {"data_batch_5": (data[:5000], labels[:5000]), "test_batch": (data[5000:], labels[5000:])}
        for name, (d, lab) in parts.items():
            with open(tmp / name, "wb") as f:
                pickle.dump({b"data": d, b"labels": lab}, f)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/relucut-bench/deepreduce-cifar10")
    parser.add_argument("--data", default="/tmp/relucut-bench/cifar10-45k-5k")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--criticality-epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core box)")
    parser.add_argument("--name", default="deepreduce_cifar10", help="results file stem in bench/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data_dir = held_out_layout(SOURCE, Path(args.data))
    spec = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8, "rho": 0.5})
    common = {"data_dir": str(data_dir), "val_fraction": 0.1, "batch_size": 64, "lr": 0.05, "schedule": "cosine",
              "limit_train": args.limit_train, "seed": 0}
    out = Path(args.out)
    # the teacher gets more epochs than the candidates: train it first as its own search step
    teacher_settings = SearchSettings(spec.to_dict(), "cifar10", {**common, "epochs": args.teacher_epochs},
                                      device="cpu")
    teacher_search = Search(teacher_settings, out / "teacher-search", SequentialExecutor(progress=False))
    teacher_search.out.mkdir(parents=True, exist_ok=True)
    teacher_search.check_settings()
    teacher_path, teacher_final = teacher_search.teacher()

    settings = SearchSettings(spec.to_dict(), "cifar10", {**common, "epochs": args.epochs},
                              criticality_epochs=args.criticality_epochs, teacher=teacher_path, device="cpu")
    search = Search(settings, out / "search", SequentialExecutor(progress=False))
    outcome = search.run()

    # Table 2's control: alpha = 0.5 on the culled (unthinned) network, for the first two culls
    stages = search.stages()
    controls = []
    for iteration in (1, 2):
        culled = tuple(["stem"] + sorted(outcome.criticality.order[:iteration], key=stages.index))
        controls.append(Candidate(iteration, "culled+alpha", culled, (), alpha=0.5))
    control_results = search.train_candidates(controls, teacher_path)
    table2 = []
    for ctrl in control_results:
        thinned = next(r for r in outcome.results if r.step == "thinned" and r.culled == ctrl.culled)
        table2.append({"culled": ctrl.culled, "relus_thinned": thinned.relus, "relus_alpha": ctrl.relus,
                       "val_thinned": thinned.val_acc, "val_alpha": ctrl.val_acc,
                       "test_thinned": thinned.test_acc, "test_alpha": ctrl.test_acc})

    seconds = time.perf_counter() - started
    # training time of every run (teacher, stage networks, candidates, controls), across invocations
    train_seconds = sum(json.loads(p.read_text())["seconds"] for p in out.rglob("final.json"))
    crit = outcome.criticality
    result = {
        "setting": {"model": spec.to_dict(), "dataset": "cifar10 (first 45k train / last 5k held-out test)",
                    "train_images": args.limit_train, "val": "seeded 10% of the 45k", "epochs": args.epochs,
                    "teacher_epochs": args.teacher_epochs, "criticality_epochs": args.criticality_epochs,
                    **{k: v for k, v in common.items() if k != "data_dir"}, "threads": args.threads},
        "teacher": teacher_final,
        "criticality": crit.to_dict(),
        "s1_least_critical": crit.order[0] == "s1",
        "frontier": [r.to_dict() for r in outcome.frontier],
        "candidates": [r.to_dict() for r in outcome.results],
        "table2_thinning_vs_alpha": table2,
        "thinning_beats_alpha": [t["val_thinned"] > t["val_alpha"] for t in table2],
        "seconds_this_invocation": seconds,
        "train_seconds_all_runs": train_seconds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(result, indent=1))
    shutil.copyfile(out / "search" / "pareto.png", RESULTS / f"{args.name}_pareto.png")
    lines = [
        "# DeepReDuce on CIFAR-10 at CPU scale", "",
        ("ResNet18, base width 8, inputs down-scaled to 16x16 (base rho 0.5), trained on the first "
        f"{args.limit_train:,} of the 45,000 training images; validation = seeded 10% of the 45k (selection); "
        "test = the held-out last 5,000 images. SGD lr 0.05 cosine, batch 64, KD T=4 weight 0.9, "
        f"teacher {args.teacher_epochs} epochs, stage networks {args.criticality_epochs}, "
        f"candidates {args.epochs}; {args.threads} CPU thread(s)."), "",
        (f"Teacher: val {100 * teacher_final.get('best_val_acc', 0):.2f}%, test "
        f"{100 * (teacher_final.get('test_acc') or 0):.2f}%."), "",
        crit.to_markdown(), "",
        markdown_table(outcome.frontier, "## Pareto frontier (validation accuracy)"), "",
        "## Table 2 control: thinning vs alpha = 0.5 at equal ReLUs (KD)", "",
        "| culled | #ReLU | thinned val | alpha=0.5 val | thinned test | alpha=0.5 test |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in table2:
        lines.append(f"| {'+'.join(s.upper() for s in t['culled'] if s != 'stem')} | {t['relus_thinned']:,} "
                     f"| {t['val_thinned']:.2f} | {t['val_alpha']:.2f} | {t['test_thinned']:.2f} | {t['test_alpha']:.2f} |")
    lines += ["", (f"Training time of all {len(list(out.rglob('final.json')))} runs: {train_seconds / 60:.1f} min "
              f"({args.threads} CPU thread(s) on a 2-core machine; evaluation and start-up excluded).")]
    atomic_write_text(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"done in {seconds:.0f} s (this invocation)")


if __name__ == "__main__":
    main()
