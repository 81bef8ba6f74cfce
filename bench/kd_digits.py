"""Does knowledge distillation help a ReLU-reduced student? Digits, several seeds, KD vs no KD.

For each seed a full-ReLU teacher (resnet18, base width 8) is trained; then the same
student (the teacher's architecture with the stem and s1 culled and s2-s4 thinned, as DeepReDuce
builds them) is trained twice from the same initialization: with Hinton KD from the teacher
(T = 4, weight 0.9) and with cross-entropy alone. Selection is on validation accuracy; the test
split is measured once at the end. Writes bench/results/kd_digits.{json,md}.

    python bench/kd_digits.py                 # about five minutes on 2 CPU cores
    python bench/kd_digits.py --seeds 0,1,2,3,4,5,6,7 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from relucut.models import ModelSpec
from relucut.plan import ReLUPlan
from relucut.sites import find_sites
from relucut.train import TrainConfig, load_data, train

RESULTS = Path(__file__).parent / "results"


def _config(spec: ModelSpec, seed: int, epochs: int, plan: ReLUPlan | None = None,
            teacher: str | None = None) -> TrainConfig:
    return TrainConfig(model=spec.to_dict(), dataset="digits", plan=plan.to_dict() if plan else None,
                       teacher=teacher, epochs=epochs, lr=0.05, schedule="cosine", batch_size=64, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=12, help="Epochs per student.")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--name", default="kd_digits")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest

    seeds = [int(s) for s in args.seeds.split(",")]
    spec = ModelSpec("resnet18", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 8})
    sites = find_sites(spec.build(), spec.input_size)
    plan = ReLUPlan.deepreduce(sites, cull=["stem", "s1"], thin=["s2", "s3", "s4"])
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            # the seed also carves the validation split: each seed gets its own teacher on that split
            teacher_dir = Path(tmp) / f"teacher{seed}"
            teacher_cfg = _config(spec, seed, args.teacher_epochs)
            data = load_data(teacher_cfg)
            teacher = train(teacher_cfg, teacher_dir, progress=False, data=data)
            kd = train(_config(spec, seed, args.epochs, plan, str(teacher_dir)), Path(tmp) / f"kd{seed}",
                       progress=False, data=data)
            plain = train(_config(spec, seed, args.epochs, plan), Path(tmp) / f"plain{seed}", progress=False,
                          data=data)
            rows.append({"seed": seed, "teacher_test": teacher["test_acc"], "kd_val": kd["best_val_acc"],
                         "kd_test": kd["test_acc"], "plain_val": plain["best_val_acc"],
                         "plain_test": plain["test_acc"]})
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - start

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    def stdev(key: str) -> float:
        return statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0

    diffs = [r["kd_test"] - r["plain_test"] for r in rows]
    wins = sum(d > 0 for d in diffs)
    ties = sum(d == 0 for d in diffs)
    result = {
        "model": spec.to_dict(), "student_plan": {"cull": ["stem", "s1"], "thin": ["s2", "s3", "s4"]},
        "teacher_relus": sum(s.numel for s in sites),
        "student_relus": plan.count(sites), "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
        "rows": rows, "seconds": round(seconds, 1),
        "summary": {"kd_test_mean": mean("kd_test"), "kd_test_std": stdev("kd_test"),
                    "plain_test_mean": mean("plain_test"), "plain_test_std": stdev("plain_test"),
                    "kd_wins": wins, "ties": ties, "seeds": len(rows)},
    }
    s = result["summary"]
    lines = [
        "# KD vs no KD for a ReLU-reduced student (digits)",
        "",
        f"resnet18 base width 8 on scikit-learn's 8x8 digits; teacher: full ReLU ({result['teacher_relus']:,} "
        f"ReLUs), {args.teacher_epochs} epochs, one per seed. Student: stem and s1 culled, "
        f"s2-s4 thinned ({result['student_relus']:,} ReLUs), {args.epochs} epochs, SGD lr 0.05 cosine, batch 64; "
        "KD = 0.9 * T^2 * KL + 0.1 * CE with T = 4. Same seed = same initialization and batches in both arms; "
        "the epoch is picked on validation, test measured once. One CPU thread.",
        "",
        "| seed | teacher test % | KD val % | KD test % | no-KD val % | no-KD test % |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *("| " + " | ".join([str(r["seed"])] + [f"{100 * r[k]:.2f}" for k in
                                                 ("teacher_test", "kd_val", "kd_test", "plain_val", "plain_test")])
          + " |" for r in rows),
        "",
        f"Test accuracy, mean ± std over {s['seeds']} seeds: KD {100 * s['kd_test_mean']:.2f} ± "
        f"{100 * s['kd_test_std']:.2f}%, no KD {100 * s['plain_test_mean']:.2f} ± {100 * s['plain_test_std']:.2f}%; "
        f"KD higher on {wins} of {s['seeds']} seeds ({ties} ties). Wall {seconds / 60:.1f} min.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
