"""Polynomial linearization side by side (issue 23 item 4): SNL, SENet and ReLUPruner, each with its
linearized positions as the identity and as a learned per-channel c2*x^2 + c1*x + c0 (``linearize``
poly2, AutoReP), at equal ReLU counts and at equal estimated latency, on CIFAR-10 at CPU scale.

The setting of bench/finegrained_cifar10.py: ResNet18, base width 8, 16x16 inputs (17,408 ReLUs), the
first 5,000 training images (the next 1,000 validate), test on the held-out last 5,000; each seed's
all-ReLU base (60 epochs; reused from finegrained_cifar10's folder when it is there) is the KD
teacher and the start point. Lengths as there: SNL searches up to 5 epochs and fine-tunes 6 (relucut's
recipe), SENet learns masks 2 epochs and fine-tunes 6, ReLUPruner prunes 6 epochs (the frontier's
ReLUPruner: warm-up at the authors' share, four mask choices an epoch) and fine-tunes 6. One CPU
thread per run.

Equal estimated latency: for each ReLU budget B, the target is the online latency the frontier's
conversion gives an identity network of B ReLUs (the full network's layers and MACs, B ReLUs); the
poly2 run gets the most ReLUs whose network, its other positions polynomials, stays within it
(``relucut.frontier_search.pricing.relu_budget_for_latency``: what ``relucut frontier
--latency-budget`` gives the poly2 entries). Both sides assume the same layers, so the difference is
the polynomials' per-element cost; the table shows each export's own estimate beside it. Under DELPHI (quads
0.03 us online against 18.3 us per ReLU) that is a few ReLUs below B; under spu-cheetah (a square
costs 0.4x a ReLU's time and 3.2x its bytes) no poly2 network of these sizes reaches the identity
network's latency: the table says so instead of training one.

    nice -n 10 .venv/bin/python bench/poly_cifar10.py --seeds 0,1
    .venv/bin/python bench/poly_cifar10.py --analyse-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from finegrained_cifar10 import SPEC, cifar_data, senet_milestones

import relucut
from relucut.finegrained.pipeline import base_model
from relucut.frontier_search import FrontierConfig
from relucut.frontier_search.pricing import masked, price, relu_budget_for_latency
from relucut.methods.relupruner import ReLUPrunerConfig
from relucut.methods.senet import SENetConfig
from relucut.methods.snl import SNLConfig
from relucut.pi import Workload
from relucut.rundir import atomic_write_json, atomic_write_text
from relucut.train import TrainConfig
from relucut.train.base import base_config

RESULTS = Path(__file__).parent / "results"
BASES = Path("/tmp/relucut-bench/finegrained-cifar10")  # finegrained_cifar10.py's seed folders
ENGINES = ("delphi", "spu-cheetah")
LATENCY_ENGINE = "delphi"  # the engine the iso-latency runs are made for (the frontier's default)


def configs(budget: int, epochs: int, linearize: str) -> dict:
    milestones = senet_milestones(epochs)
    prune = epochs
    return {
        "snl": SNLConfig(budget=budget, search_epochs=5, finetune_epochs=epochs, milestones=milestones[:2],
                         mask_lr=0.02, check_every=10, l1_init=0.1, linearize=linearize),
        "senet": SENetConfig(budget=budget, mask_epochs=2, finetune_epochs=epochs, milestones=milestones,
                             linearize=linearize),
        "relupruner": ReLUPrunerConfig(budget=budget, prune_epochs=prune, warmup_epochs=round(5 * prune / 150),
                                       finetune_epochs=epochs, update_every=None, linearize=linearize),
    }


def latency(report, engine: str) -> float:
    return price(report, FrontierConfig(budgets=[1], engine=engine)).online_s


def iso_latency_budget(full, budget: int, engine: str) -> tuple[float, int | None]:
    """The conversion's latency of an identity network of ``budget`` ReLUs, and the most ReLUs a poly2
    network may keep within it (None: none reaches it)."""
    config = FrontierConfig(latency_budgets=[1.0], engine=engine)
    target = price(masked(Workload.of(full), budget, full.relus, len(full.sites)), config).online_s
    return target, relu_budget_for_latency(full, target, config, "poly2")


def engine_for(seed: int) -> TrainConfig:
    quarters = [15, 30, 45]  # finegrained_cifar10's base: 60 epochs, decays at 25/50/75 %
    return TrainConfig(epochs=60, batch_size=64, device="cpu", seed=seed, milestones=quarters)


def run_seed(args, seed: int, data) -> list[dict]:
    out = Path(args.out) / f"seed{seed}"
    engine = base_config(SPEC, data, engine_for(seed))
    teacher = BASES / f"seed{seed}" / "base"
    if not (teacher / "final.json").is_file():  # train it here, as finegrained_cifar10.py would
        base_model(engine, data, out, None, progress=False)
        teacher = out / "base"
    full = relucut.count(SPEC.build(), SPEC.input_size)
    rows = []

    def run(method: str, linearize: str, budget: int, made_for: str, target: int) -> None:
        name = f"{method}-{linearize}-{budget}"
        cfg = configs(budget, args.epochs, linearize)[method]
        res = relucut.reduce(SPEC, cfg, data=data, teacher=teacher, train=engine, out=out / name, progress=False)
        row = {"seed": seed, "method": method, "linearize": linearize, "budget": budget, "made_for": made_for,
               "target_relus": target, "relus": res.relus, "poly2": res.report.nonlinear_by_kind.get("poly2", 0),
               "val_acc": res.val_acc, "test_acc": res.test_acc, "seconds": res.seconds,
               **{f"{e}_online_s": latency(res.report, e) for e in ENGINES}}
        rows.append(row)
        atomic_write_json(RESULTS / f"poly_cifar10.seed{seed}.json", rows)  # a stopped bench keeps its rows
        print(json.dumps(row), flush=True)

    for budget in args.budgets:  # a budget's rows complete before the next budget starts
        for method in args.methods:
            for linearize in ("identity", "poly2"):
                run(method, linearize, budget, "iso-relu", budget)
        _, iso = iso_latency_budget(full, budget, LATENCY_ENGINE)  # poly2 at the identity's estimated latency
        for method in args.methods:
            if iso is not None and iso != budget:
                run(method, "poly2", iso, f"iso-latency {LATENCY_ENGINE}", budget)
    return rows


def analyse(rows: list[dict], args) -> dict:
    full = relucut.count(SPEC.build(), SPEC.input_size)
    table, verdicts = [], []
    for budget in args.budgets:
        for method in args.methods:
            def pick(linearize, made_for, method=method, budget=budget):
                return [r for r in rows if (r["method"], r["linearize"], r["made_for"]) == (method, linearize, made_for)
                        and r["target_relus"] == budget]
            ident, poly = pick("identity", "iso-relu"), pick("poly2", "iso-relu")
            iso = pick("poly2", f"iso-latency {LATENCY_ENGINE}")
            at_latency = f"poly2 at identity's {LATENCY_ENGINE} latency"
            for label, group in (("identity", ident), ("poly2", poly), (at_latency, iso)):
                if not group:
                    continue
                table.append({"budget": budget, "method": method, "run": label,
                              "relus": sorted({r["relus"] for r in group}), "poly2": sorted({r["poly2"] for r in group}),
                              "test_acc": [100 * r["test_acc"] for r in sorted(group, key=lambda r: r["seed"])],
                              **{f"{e}_online_s": statistics.mean(r[f"{e}_online_s"] for r in group) for e in ENGINES}})
            for label, other in (("iso-ReLU", poly), (f"iso-latency ({LATENCY_ENGINE})", iso or poly)):
                pairs = [(p["test_acc"] - i["test_acc"]) * 100 for i in ident for p in other if p["seed"] == i["seed"]]
                if pairs:
                    mean = statistics.mean(pairs)
                    verdict = "poly2 wins" if all(d > 0 for d in pairs) else "identity wins" if all(d < 0 for d in pairs) \
                        else "mixed"
                    verdicts.append({"budget": budget, "method": method, "comparison": label, "diffs": pairs,
                                     "mean": mean, "verdict": verdict})
            if ident:
                spu_target, spu_iso = iso_latency_budget(full, budget, "spu-cheetah")
                verdicts.append({"budget": budget, "method": method, "comparison": "iso-latency (spu-cheetah)",
                                 "diffs": [], "mean": None,
                                 "verdict": f"no poly2 network reaches its {spu_target:.3f} s" if spu_iso is None
                                 else f"poly2 budget {spu_iso:,} (not trained)"})
    return {"rows": rows, "table": table, "verdicts": verdicts, "args": vars(args)}


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [
        "# Polynomial linearization side by side (bench/poly_cifar10.py)",
        "",
        (f"ResNet18 w8, 16x16 CIFAR-10 (17,408 ReLUs), first 5,000 training images, test on the held-out last "
         f"5,000; seeds {a['seeds']}; KD from each seed's 60-epoch all-ReLU base. SNL: search <= 5 + "
         f"{a['epochs']} fine-tuning epochs; SENet: 2 mask + {a['epochs']}; ReLUPruner: {a['epochs']} prune + "
         f"{a['epochs']}. Test accuracy per seed; online latency estimated on each export (mean over seeds)."),
        "",
        ("| budget | method | run | ReLUs | poly2 positions | test acc % (per seed) | mean | DELPHI online s | "
         "spu-cheetah online s |"),
        "| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for t in result["table"]:
        accs = ", ".join(f"{v:.2f}" for v in t["test_acc"])
        lines.append(f"| {t['budget']:,} | {t['method']} | {t['run']} | {'/'.join(f'{v:,}' for v in t['relus'])} | "
                     f"{'/'.join(f'{v:,}' for v in t['poly2'])} | {accs} | {statistics.mean(t['test_acc']):.2f} | "
                     f"{t['delphi_online_s']:.3f} | {t['spu-cheetah_online_s']:.3f} |")
    lines += ["", "## Verdicts (poly2 minus identity, test points per seed)", "",
              "| budget | method | comparison | per seed | mean | verdict |", "| ---: | --- | --- | --- | ---: | --- |"]
    for v in result["verdicts"]:
        diffs = ", ".join(f"{d:+.2f}" for d in v["diffs"]) or "-"
        mean = f"{v['mean']:+.2f}" if v["mean"] is not None else "-"
        lines.append(f"| {v['budget']:,} | {v['method']} | {v['comparison']} | {diffs} | {mean} | {v['verdict']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/relucut-bench/poly-cifar10")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budgets", default="3584,1024")
    parser.add_argument("--methods", default="snl,senet,relupruner")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.methods = args.methods.split(",")
    torch.set_num_threads(1)
    if not args.analyse_only:  # one rows file per seed: seeds may run in parallel processes
        data = cifar_data(5000)
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(args, seed, data)
    rows = [r for f in sorted(RESULTS.glob("poly_cifar10.seed*.json")) for r in json.loads(f.read_text())]
    result = analyse(rows, args)
    atomic_write_json(RESULTS / "poly_cifar10.json", result)
    atomic_write_text(RESULTS / "poly_cifar10.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
