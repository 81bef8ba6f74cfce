"""Do DeepReDuce's candidates need training from scratch, or do the teacher's weights do as well in fewer epochs?

Per seed: a full-ReLU teacher (resnet18, base width 8, digits) is trained; then DeepReDuce's
candidates for a fixed culling order (only those whose weights have the teacher's shapes: culled,
thinned, rho-scaled) are trained with KD three ways: from scratch for E epochs (relucut's default),
from the teacher's weights for E epochs, and from the teacher's weights for E/2 epochs. Selection is
on validation; the frontier accuracy is the best validation accuracy within each ReLU budget.
Writes bench/results/init_teacher.{json,md}.

    python bench/init_teacher.py                       # ~15 minutes on 2 idle CPU cores
    python bench/init_teacher.py --seeds 0,1,2 --epochs 12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from relucut.deepreduce.candidates import cost_candidate, generate_candidates, stage_blocks_of
from relucut.models import ModelSpec
from relucut.rundir import atomic_write_text
from relucut.sites import find_sites
from relucut.train import TrainConfig, load_data, train

RESULTS = Path(__file__).parent / "results"
ORDER = ["s1", "s2", "s3", "s4"]  # least to most critical (fixed, so every arm trains the same networks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=8, help="E: epochs of the from-scratch candidates.")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--budgets", default="500,1000,2000,4000")
    parser.add_argument("--name", default="init_teacher")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ModelSpec("resnet18", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 8})
    sites = find_sites(spec.build(), spec.input_size)
    cands = [c for c in generate_candidates(ORDER, sites.stage_names, stage_blocks_of(sites)) if c.alpha == 1.0]
    costs = [cost_candidate(c, spec) for c in cands]
    budgets = [int(b) for b in args.budgets.split(",")]
    arms = {"scratch E": (False, args.epochs), "teacher E": (True, args.epochs),
            "teacher E/2": (True, max(1, args.epochs // 2))}
    rows, started = [], time.time()
    for seed in (int(s) for s in args.seeds.split(",")):
        base = TrainConfig(model=spec, dataset="digits", epochs=args.teacher_epochs, lr=0.05,
                           schedule="cosine", batch_size=64, seed=seed, device="cpu")
        data = load_data(base)
        with tempfile.TemporaryDirectory() as tmp:
            teacher = Path(tmp) / "teacher"
            t_final = train(base, teacher, data=data, progress=False)
            for arm, (from_teacher, epochs) in arms.items():
                t0 = time.time()
                accs = []
                for cost in costs:
                    cfg = dataclasses.replace(base, model=cost.spec, plan=cost.plan,
                                              teacher=str(teacher), epochs=epochs,
                                              init=str(teacher) if from_teacher else None)
                    final = train(cfg, Path(tmp) / f"{arm}-{cost.candidate.name}", data=data, progress=False)
                    accs.append((cost.relus, final["best_val_acc"]))
                front = {b: max((a for r, a in accs if r <= b), default=None) for b in budgets}
                rows.append({"seed": seed, "arm": arm, "epochs": epochs, "teacher_val_acc": t_final["best_val_acc"],
                             "mean_val_acc": statistics.mean(a for _, a in accs),
                             "frontier_val_acc": front, "seconds": time.time() - t0, "candidates": len(accs)})
                print(f"seed {seed} {arm}: mean val {100 * rows[-1]['mean_val_acc']:.2f}%, "
                      f"frontier {', '.join(f'{b}: {100 * a:.1f}' for b, a in front.items() if a is not None)}, "
                      f"{rows[-1]['seconds']:.0f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    doc = {"model": spec.to_dict(), "dataset": "digits", "order": ORDER, "budgets": budgets, "rows": rows,
           "seconds": time.time() - started, "args": vars(args)}
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(doc, indent=1))
    atomic_write_text(RESULTS / f"{args.name}.md", _markdown(doc, arms))


def _markdown(doc: dict, arms: dict) -> str:
    seeds = sorted({r["seed"] for r in doc["rows"]})
    lines = [f"# DeepReDuce candidates from scratch vs from the teacher's weights (digits, seeds {seeds})", "",
             "Validation accuracy %, mean ± spread (max - min) over seeds; frontier: best within the budget.", "",
             "| arm | epochs | mean over candidates | " + " | ".join(f"≤ {b:,}" for b in doc["budgets"])
             + " | train s |", "| --- | ---: | ---: | " + " | ".join("---:" for _ in doc["budgets"]) + " | ---: |"]

    def stat(values: list[float | None]) -> str:
        if any(v is None for v in values):
            return "-"
        return f"{100 * statistics.mean(values):.2f} ± {100 * (max(values) - min(values)):.2f}"

    for arm in arms:
        mine = [r for r in doc["rows"] if r["arm"] == arm]
        cells = [stat([r["frontier_val_acc"][b] for r in mine]) for b in doc["budgets"]]
        lines.append(f"| {arm} | {mine[0]['epochs']} | {stat([r['mean_val_acc'] for r in mine])} | "
                     + " | ".join(cells) + f" | {statistics.mean(r['seconds'] for r in mine):.0f} |")
    teacher = [r["teacher_val_acc"] for r in doc["rows"] if r["arm"] == next(iter(arms))]
    lines += ["", f"Teacher (all ReLUs): {stat(teacher)} % validation."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
