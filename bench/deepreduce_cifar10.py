"""DeepReDuce on the real CIFAR-10 images at a CPU-feasible scale, per seed, with the paper's controls.

Split: the first 45,000 training images train (a seeded 10% of them validate, for selection),
the last 5,000 (second half of data_batch_5) are the held-out test set. Scale: ResNet18 with base
width 8, inputs down-scaled to 16x16 (rho = 0.5 in the base network, so the candidates' rho = 0.5
gives 8x8), the first 5,000 training images, a few epochs, one CPU thread.

Besides the search (teacher -> stage criticality -> candidates with KD -> frontier) it trains the
controls of relucut issue 12, every one like the candidates (same epochs, same seed):
  * KD: each culled candidate again without KD (teacher=None);
  * Table 2: each of the first two culled networks with alpha = 0.5 instead of thinning (equal ReLUs);
  * rho: the candidates that reduce resolution again with ``rho_mode='stride'`` (a strided stem conv,
    as DeepReDuce's model zoo, instead of average-pooling the input; equal ReLUs and MACs), and the
    thinned candidates with the base network's own x2 down-scaling done by a stride-2 stem conv.
``--criticality-only`` trains the teacher and the stage networks alone (e.g. ``--rho 1.0
--base-width 8``: criticality at 32x32 inputs with a narrow network). ``--summarize`` reads the
per-seed result files and writes bench/results/deepreduce_cifar10_seeds.{json,md}, the verdicts.

Resumable: rerun the same command after a kill or a timeout and it continues.
    OMP_NUM_THREADS=1 nice -n 10 timeout 1800 .venv/bin/python bench/deepreduce_cifar10.py --seed 0
    OMP_NUM_THREADS=1 nice -n 10 timeout 1800 .venv/bin/python bench/deepreduce_cifar10.py --seed 0 \\
        --criticality-only --rho 1.0 --base-width 8   # 32x32; one seed ~5.5 min on one core
    .venv/bin/python bench/deepreduce_cifar10.py --summarize --seeds 0,1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from relucut import ModelSpec
from relucut.deepreduce.candidates import Candidate, cost_candidate
from relucut.deepreduce.criticality import criticality_order, criticality_scores
from relucut.executors import SequentialExecutor
from relucut.deepreduce.frontier import markdown_table
from relucut.deepreduce.frontier import row as candidate_row
from relucut.deepreduce.search import Search
from relucut.methods.deepreduce import DeepReDuceConfig
from relucut.train import TrainConfig
from relucut.plan import atomic_write_text

SOURCE = Path("/work/shared/data/cifar-10-batches-py")
RESULTS = Path(__file__).parent / "results"
FULL_STEM = "deepreduce_cifar10"  # seed 0: deepreduce_cifar10.json, seed N: deepreduce_cifar10_seedN.json


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


# -- pure helpers (tests/test_bench_deepreduce.py) ---------------------------------------------------
def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread (half the range: with 2 seeds, mean +- spread are the two values)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_spread needs at least one value")
    return statistics.fmean(vals), (max(vals) - min(vals)) / 2


def fmt_ms(values: Sequence[float], digits: int = 2, signed: bool = False) -> str:
    if not values:
        return "-"
    m, s = mean_spread(values)
    return f"{m:+.{digits}f} ± {s:.{digits}f}" if signed else f"{m:.{digits}f} ± {s:.{digits}f}"


def verdict(diffs: Sequence[float]) -> str:
    """'holds' when every paired difference (claim side minus other side) is positive, 'does not hold'
    when none is, else 'mixed'."""
    if not diffs:
        return "not measured"
    wins = sum(d > 0 for d in diffs)
    return "holds" if wins == len(diffs) else "does not hold" if wins == 0 else "mixed"


def seed_consistency(seed_means: Sequence[float]) -> str:
    """How a 'mixed' difference reads over seeds: the same sign in every seed's mean, or not."""
    if not seed_means:
        return "not measured"
    m, spread = mean_spread(seed_means)
    if all(x > 0 for x in seed_means):
        return f"ahead on average in every seed ({m:+.2f} ± {spread:.2f}) but not in every network: a small effect"
    if all(x < 0 for x in seed_means):
        return f"behind on average in every seed ({m:+.2f} ± {spread:.2f}) but not in every network: a small effect"
    return f"seed means differ in sign ({m:+.2f} ± {spread:.2f}): no difference measurable at this scale"


def least_critical_rank(order: Sequence[str], stage: str = "s1") -> int:
    """1 when ``stage`` is the least critical (culled first)."""
    return list(order).index(stage) + 1


def order_from(rows: Sequence[dict], key: str, stage_names: Sequence[str]) -> list[str]:
    """The criticality order (Eq. 1) from the rows' ``key`` accuracy (fractions): report-only for test."""
    percent = {r["stage"]: 100 * r[key] for r in rows}
    return criticality_order(criticality_scores(percent, {r["stage"]: r["relus"] for r in rows}), stage_names)


# -- one seed ---------------------------------------------------------------------------------------
def spec_for(width: int, rho: float, rho_mode: str = "pool") -> ModelSpec:
    kwargs = {"base_width": width, "rho": rho}
    if rho_mode != "pool":
        kwargs["rho_mode"] = rho_mode
    return ModelSpec("resnet18", num_classes=10, kwargs=kwargs)


def out_dir(args) -> Path:
    default = args.rho == 0.5 and args.base_width == 8 and not args.criticality_only
    tag = "" if default else f"{'crit-' if args.criticality_only else ''}rho{args.rho:g}-w{args.base_width}"
    return Path(args.out) / tag / f"seed{args.seed}" if tag else Path(args.out) / f"seed{args.seed}"


def result_name(args) -> str:
    if args.name:
        return args.name.format(seed=args.seed)
    side = round(32 * args.rho)
    stem = f"{FULL_STEM}_crit{side}" if args.criticality_only else FULL_STEM
    if not args.criticality_only and (args.rho != 0.5 or args.base_width != 8):
        stem = f"{FULL_STEM}_rho{args.rho:g}_w{args.base_width}"
    return stem if args.seed == 0 and not args.criticality_only else f"{stem}_seed{args.seed}"


def _pct(v):
    return None if v is None else 100.0 * float(v)


def _label(culled: Sequence[str]) -> str:
    return "+".join(s.upper() for s in culled if s != "stem")


def new_search(spec: ModelSpec, common: dict, epochs: int, out: Path, executor, teacher: str | None = None,
               **config) -> Search:
    """A DeepReDuce search of ``spec`` with the bench's recipe (``common``) for ``epochs``."""
    base = TrainConfig(model=spec, dataset="cifar10", device="cpu", epochs=epochs, **common)
    return Search(DeepReDuceConfig(**config), base, out, teacher=Path(teacher) if teacher else None,
                  executor=executor)


def train_teacher(common: dict, spec: ModelSpec, args, out: Path, executor) -> tuple[str, dict]:
    # the teacher gets more epochs than the candidates: train it first as its own search step
    teacher_search = new_search(spec, common, args.teacher_epochs, out / "teacher-search", executor)
    with teacher_search.check_settings():
        return teacher_search.teacher()


def setting_record(spec: ModelSpec, common: dict, args) -> dict:
    return {"model": spec.to_dict(), "dataset": "cifar10 (first 45k train / last 5k held-out test)",
            "train_images": args.limit_train, "val": "seeded 10% of the 45k", "epochs": args.epochs,
            "teacher_epochs": args.teacher_epochs, "criticality_epochs": args.criticality_epochs,
            **{k: v for k, v in common.items() if k != "data_dir"}, "threads": args.threads}


def run_criticality_only(args, common: dict, spec: ModelSpec, out: Path, executor, started: float) -> None:
    teacher_path, teacher_final = train_teacher(common, spec, args, out, executor)
    crit = new_search(spec, common, args.epochs, out / "search", executor, teacher_path,
                      criticality_epochs=args.criticality_epochs).run_criticality()
    seconds = time.perf_counter() - started
    train_seconds = sum(json.loads(p.read_text())["seconds"] for p in out.rglob("final.json"))
    side = round(32 * args.rho)
    test_order = order_from([dataclasses.asdict(r) for r in crit.stages], "test_acc_kd", ["stem", *crit.order])
    result = {"setting": setting_record(spec, common, args), "input_side": side, "teacher": teacher_final,
              "criticality": crit.to_dict(), "s1_least_critical": crit.order[0] == "s1",
              "order_by_test_report_only": test_order,
              "seconds_this_invocation": seconds, "train_seconds_all_runs": train_seconds}
    name = result_name(args)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(result, indent=1))
    lines = [
        f"# DeepReDuce stage criticality on CIFAR-10 at {side}x{side} inputs, seed {args.seed}", "",
        (f"ResNet18, base width {args.base_width}, rho {args.rho:g} ({side}x{side} inputs), first "
         f"{args.limit_train:,} of the 45,000 training images; validation = seeded 10% of the 45k (selection); "
         f"test = the held-out last 5,000. SGD lr 0.05 cosine, batch 64, KD T=4 weight 0.9; teacher "
         f"{args.teacher_epochs} epochs, stage networks {args.criticality_epochs}; seed {args.seed}; "
         f"{args.threads} CPU thread(s)."), "",
        (f"Teacher: val {_pct(teacher_final.get('best_val_acc')):.2f}%, test "
         f"{_pct(teacher_final.get('test_acc') or 0):.2f}%."), "",
        crit.to_markdown(),
        "Order from test accuracy (report only, never used to choose): "
        + " < ".join(s.upper() for s in test_order), "",
        f"Training time of all {len(list(out.rglob('final.json')))} runs: {train_seconds / 60:.1f} min.",
    ]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"done in {seconds:.0f} s (this invocation)")


def run_full(args, common: dict, spec: ModelSpec, out: Path, executor, started: float) -> None:
    teacher_path, teacher_final = train_teacher(common, spec, args, out, executor)
    def searching(folder: str, model: ModelSpec = spec, **config) -> Search:
        return new_search(model, common, args.epochs, out / folder, executor, teacher_path,
                          criticality_epochs=args.criticality_epochs, **config)

    search = searching("search")
    outcome = search.run()
    crit = outcome.criticality
    by_name = {r.name: r for r in outcome.results}
    cands = search.candidates(crit.order)  # the same list the search trained (identical ones dropped)

    # Table 2's control: alpha = 0.5 on the culled (unthinned) network, for the first two culls
    stages = search.stages()
    controls = []
    for iteration in (1, 2):
        culled = tuple(["stem"] + sorted(crit.order[:iteration], key=stages.index))
        controls.append(Candidate(iteration, "culled+alpha", culled, (), alpha=0.5))
    with search.check_settings():
        control_results = search.train_candidates(controls, teacher_path)
    table2 = []
    for ctrl in control_results:
        thinned = next(r for r in outcome.results if r.details["step"] == "thinned"
                       and tuple(r.details["culled"]) == tuple(ctrl.details["culled"]))
        assert thinned.relus == ctrl.relus, (thinned.name, thinned.relus, ctrl.relus)
        table2.append({"culled": ctrl.details["culled"], "relus_thinned": thinned.relus, "relus_alpha": ctrl.relus,
                       "val_thinned": _pct(thinned.val_acc), "val_alpha": _pct(ctrl.val_acc),
                       "test_thinned": _pct(thinned.test_acc), "test_alpha": _pct(ctrl.test_acc)})

    # KD control: every culled candidate again without KD (its own folder: same names, other runs)
    culled_cands = [c for c in cands if c.step == "culled"]
    nokd = searching("nokd")
    print(f"KD control: {len(culled_cands)} culled networks without KD")
    with nokd.check_settings():
        nokd_results = nokd.train_candidates(culled_cands, None)  # teacher None: cross-entropy only
    kd_rows = []
    for r in nokd_results:
        kd = by_name[r.name]
        assert kd.relus == r.relus
        kd_rows.append({"name": r.name, "culled": r.details["culled"], "relus": r.relus, "val_kd": _pct(kd.val_acc),
                        "val_nokd": _pct(r.val_acc), "test_kd": _pct(kd.test_acc), "test_nokd": _pct(r.test_acc)})

    # rho control: the candidates' rho by a strided stem conv (relucut's default since this bench, as
    # the zoo) against pooling the input; and the base network's own rho 0.5 by a stride-2 stem
    stride_spec = spec_for(args.base_width, args.rho, "stride")
    rho_cands = [c for c in cands if c.rho != 1.0]  # x (1/rho_base)(1/rho) = x4 down-scaling of 32x32
    pooled = [dataclasses.replace(c, rho_mode="pool") for c in rho_cands]
    base_cands = [c for c in cands if c.step == "thinned"]  # the base x2 down-scaling only (stride-2 stem)
    pairs = [(cost_candidate(p, spec), cost_candidate(c, spec)) for p, c in zip(pooled, rho_cands)]
    pairs += [(cost_candidate(c, spec), cost_candidate(c, stride_spec)) for c in base_cands]
    for pool_cost, stride_cost in pairs:
        assert pool_cost.spec != stride_cost.spec and pool_cost.relus == stride_cost.relus, pool_cost.candidate.name
        assert pool_cost.report.macs == stride_cost.report.macs, pool_cost.candidate.name
    pool_search = searching("rho-pool")
    stride = searching("rho-stride", model=stride_spec)
    print(f"rho control: {len(pooled)} networks with rho_mode='pool', {len(base_cands)} with a strided base")
    with pool_search.check_settings():
        pool_results = pool_search.train_candidates(pooled, teacher_path)
    with stride.check_settings():
        stride_results = stride.train_candidates(base_cands, teacher_path)
    rho_rows = []
    measured = [(p, by_name[c.name]) for p, c in zip(pool_results, rho_cands)]
    measured += [(by_name[c.name], r) for c, r in zip(base_cands, stride_results)]
    for pool, r in measured:
        assert pool.relus == r.relus and pool.macs == r.macs
        rho_rows.append({"name": r.name, "step": r.details["step"], "culled": r.details["culled"],
                         "downscale": round(1 / (args.rho * r.details["rho"])),
                         "relus": r.relus, "macs": r.macs, "val_pool": _pct(pool.val_acc), "val_stride": _pct(r.val_acc),
                         "test_pool": _pct(pool.test_acc), "test_stride": _pct(r.test_acc)})

    # thinning style: the same thinned networks dropping each block's inner ReLU instead of its post-add one
    inner = searching("thin-inner", thin_style="inner")
    inner_cands = [dataclasses.replace(c, thin_style="inner") for c in base_cands]
    print(f"thinning-style control: {len(inner_cands)} thinned networks with thin_style='inner'")
    with inner.check_settings():
        inner_results = inner.train_candidates(inner_cands, teacher_path)
    thin_rows = []
    for c, r in zip(base_cands, inner_results):
        post_add = by_name[c.name]
        assert post_add.relus == r.relus, (c.name, post_add.relus, r.relus)
        thin_rows.append({"name": c.name, "culled": r.details["culled"], "thinned": r.details["thinned"], "relus": r.relus,
                          "val_post_add": _pct(post_add.val_acc), "val_inner": _pct(r.val_acc),
                          "test_post_add": _pct(post_add.test_acc), "test_inner": _pct(r.test_acc)})

    seconds = time.perf_counter() - started
    # training time of every run (teacher, stage networks, candidates, controls), across invocations
    train_seconds = sum(json.loads(p.read_text())["seconds"] for p in out.rglob("final.json"))
    test_order = order_from([dataclasses.asdict(r) for r in crit.stages], "test_acc_kd", search.sites.stage_names)
    result = {
        "setting": setting_record(spec, common, args),
        "units": "teacher, criticality, frontier, candidates: fractions; table2, kd_vs_nokd, rho and thinning-style rows: percent",
        "input_side": round(32 * args.rho),
        "teacher": teacher_final,
        "criticality": crit.to_dict(),
        "s1_least_critical": crit.order[0] == "s1",
        "order_by_test_report_only": test_order,
        "frontier": [candidate_row(r) for r in outcome.frontier],
        "candidates": [candidate_row(r) for r in outcome.results],
        "table2_thinning_vs_alpha": table2,
        "thinning_beats_alpha": [t["val_thinned"] > t["val_alpha"] for t in table2],
        "kd_vs_nokd": kd_rows,
        "rho_stride_vs_pool": rho_rows,
        "thin_post_add_vs_inner": thin_rows,
        "seconds_this_invocation": seconds,
        "train_seconds_all_runs": train_seconds,
    }
    name = result_name(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(result, indent=1))
    shutil.copyfile(out / "search" / "pareto.png", RESULTS / f"{name}_pareto.png")
    lines = [
        f"# DeepReDuce on CIFAR-10 at CPU scale, seed {args.seed}", "",
        (f"ResNet18, base width {args.base_width}, inputs down-scaled to {round(32 * args.rho)}x{round(32 * args.rho)} "
         f"(base rho {args.rho:g}), trained on the first "
         f"{args.limit_train:,} of the 45,000 training images; validation = seeded 10% of the 45k (selection); "
         "test = the held-out last 5,000 images. SGD lr 0.05 cosine, batch 64, KD T=4 weight 0.9, "
         f"teacher {args.teacher_epochs} epochs, stage networks {args.criticality_epochs}, "
         f"candidates and controls {args.epochs}; seed {args.seed}; {args.threads} CPU thread(s). "
         "All accuracies in %. Summary over seeds: deepreduce_cifar10_seeds.md."), "",
        (f"Teacher: val {_pct(teacher_final.get('best_val_acc')):.2f}%, test "
         f"{_pct(teacher_final.get('test_acc') or 0):.2f}%."), "",
        crit.to_markdown(),
        "Order from test accuracy (report only): " + " < ".join(s.upper() for s in test_order), "",
        markdown_table(outcome.frontier, "## Pareto frontier (validation accuracy)"), "",
        "## Table 2 control: thinning vs alpha = 0.5 at equal ReLUs (KD)", "",
        "| culled | #ReLU | thinned val | alpha=0.5 val | thinned test | alpha=0.5 test |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in table2:
        lines.append(f"| {_label(t['culled'])} | {t['relus_thinned']:,} "
                     f"| {t['val_thinned']:.2f} | {t['val_alpha']:.2f} | {t['test_thinned']:.2f} | {t['test_alpha']:.2f} |")
    lines += ["", "## KD control: each culled network with and without KD", "",
              "| culled network | #ReLU | val w/ KD | val w/o KD | test w/ KD | test w/o KD |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k in kd_rows:
        lines.append(f"| {_label(k['culled'])} | {k['relus']:,} | {k['val_kd']:.2f} | {k['val_nokd']:.2f} "
                     f"| {k['test_kd']:.2f} | {k['test_nokd']:.2f} |")
    lines += ["", ("## rho control: input average-pooled vs strided stem conv (the zoo; DeepReDuce's rho "
                   "candidates' default), KD"), "",
              ("Equal ReLUs and MACs in each row (asserted). x2: the base network's own 32->16 reduction "
              "(stride-2 stem, the zoo's operation) on the thinned networks; x4: the candidates' rho 0.5 on top "
              "(pool by 4, or a stride-4 stem conv on the 32x32 input)."), "",
              "| network | reduction | #ReLU | MACs | val pool | val stride | test pool | test stride |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in rho_rows:
        lines.append(f"| {k['name']} | x{k['downscale']} | {k['relus']:,} | {k['macs'] / 1e6:.2f}M | {k['val_pool']:.2f} "
                     f"| {k['val_stride']:.2f} | {k['test_pool']:.2f} | {k['test_stride']:.2f} |")
    lines += ["", (f"Training time of all {len(list(out.rglob('final.json')))} runs: {train_seconds / 60:.1f} min "
              f"({args.threads} CPU thread(s) on a 2-core machine; evaluation and start-up excluded).")]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"done in {seconds:.0f} s (this invocation)")


# -- summary over seeds -----------------------------------------------------------------------------
def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def full_path(seed: int) -> Path:
    return RESULTS / (f"{FULL_STEM}.json" if seed == 0 else f"{FULL_STEM}_seed{seed}.json")


def crit_rows(runs: dict[int, dict]) -> tuple[list[str], dict]:
    """Per-stage C_k and accuracies over seeds, and each seed's order (val) and S1 rank (val, test)."""
    lines, record = [], {}
    stages = [r["stage"] for r in next(iter(runs.values()))["criticality"]["stages"]]
    lines += ["| stage | C_k (val) | val w/ KD | test w/ KD | val w/o KD | test w/o KD |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for st in stages:
        rows = [next(r for r in d["criticality"]["stages"] if r["stage"] == st) for d in runs.values()]
        cols = {k: [100 * r[k] for r in rows if r.get(k) is not None]
                for k in ("val_acc_kd", "test_acc_kd", "val_acc", "test_acc")}
        lines.append(f"| {st.upper()} | {fmt_ms([r['score'] for r in rows])} | {fmt_ms(cols['val_acc_kd'])} "
                     f"| {fmt_ms(cols['test_acc_kd'])} | {fmt_ms(cols['val_acc'])} | {fmt_ms(cols['test_acc'])} |")
        record[st] = {"score": [r["score"] for r in rows], **cols}
    lines.append("")
    for seed, d in runs.items():
        order = d["criticality"]["order"]
        lines.append(f"- seed {seed}: order (val) {' < '.join(s.upper() for s in order)}; "
                     f"from test (report only) {' < '.join(s.upper() for s in d['order_by_test_report_only'])}")
    return lines, record


def rows_by_network(runs: dict[int, dict], key: str) -> dict[str, list[dict]]:
    """A control's rows grouped by network name over seeds (orders, so networks, differ by seed)."""
    out: dict[str, list[dict]] = {}
    for d in runs.values():
        for row in d[key]:
            out.setdefault(row["name"], []).append(row)
    return out


def summarize(seeds: Sequence[int]) -> None:
    full = {s: d for s in seeds if (d := _load(full_path(s))) is not None}
    crit32 = {s: d for s in seeds if (d := _load(RESULTS / f"{FULL_STEM}_crit32_seed{s}.json")) is not None}
    if not full:
        raise SystemExit("no per-seed results to summarize")
    def width(runs: dict[int, dict]) -> str:
        return f"w{next(iter(runs.values()))['setting']['model']['kwargs']['base_width']}" if runs else "-"

    lines = ["# DeepReDuce at CPU scale over seeds: the paper's claims and their verdicts", "",
             (f"Seeds {', '.join(map(str, full))} (16x16 search, ResNet18 {width(full)}), "
              f"{', '.join(map(str, crit32)) or 'none'} (32x32 criticality, ResNet18 {width(crit32)}). Every number: mean ± spread over "
              "seeds, spread = half the range (with 2 seeds, mean ± spread are the two values); accuracies in %, "
              "differences in points. Selection and every verdict use validation accuracy; test accuracy (the "
              "held-out last 5,000 images) is reported only. Verdict: holds = the claim's side ahead in every "
              "(network, seed) pair on validation; does not hold = in none; mixed otherwise."), ""]
    setting = next(iter(full.values()))["setting"]
    lines.append(f"Setting: {setting['train_images']:,} training images, teacher {setting['teacher_epochs']} "
                 f"epochs, stage networks {setting['criticality_epochs']}, candidates and controls "
                 f"{setting['epochs']}; one CPU thread.")
    lines += ["", "## Teachers", "", "| run | seeds | val | test |", "| --- | --- | ---: | ---: |"]
    teachers = {}
    for title, runs in ((f"16x16, {width(full)}", full), (f"32x32, {width(crit32)} (criticality)", crit32)):
        if runs:
            val = [100 * d["teacher"]["best_val_acc"] for d in runs.values()]
            test = [100 * d["teacher"]["test_acc"] for d in runs.values()]
            teachers[title] = {"val": val, "test": test}
            lines.append(f"| {title} | {', '.join(map(str, runs))} | {fmt_ms(val)} | {fmt_ms(test)} |")
    best_student = [100 * max(r["val_acc"] for r in d["candidates"]) for d in full.values()]
    teacher_margin = [100 * d["teacher"]["best_val_acc"] - b for d, b in zip(full.values(), best_student)]
    lines += ["", f"16x16 teacher minus its best student (val): {fmt_ms(teacher_margin, signed=True)} points.", ""]

    verdicts = []

    def claim(name: str, val: dict[int, list[float]], test: dict[int, list[float]], detail: str,
              cause: str) -> None:
        """One verdict row; ``val``/``test``: per seed, the paired differences (claim side minus other)."""
        pairs_val = [x for v in val.values() for x in v]
        pairs_test = [x for v in test.values() for x in v]
        verdicts.append({
            "claim": name, "val_diff_per_seed": val, "test_diff_per_seed": test,
            # mean over a seed's networks, then mean +- spread over seeds
            "val_seed_means": [statistics.fmean(v) for v in val.values() if v],
            "test_seed_means": [statistics.fmean(v) for v in test.values() if v],
            "pairs_ahead_val": f"{sum(x > 0 for x in pairs_val)}/{len(pairs_val)}",
            "pairs_ahead_test": f"{sum(x > 0 for x in pairs_test)}/{len(pairs_test)}",
            "verdict": verdict(pairs_val), "verdict_test_report_only": verdict(pairs_test),
            "detail": detail, "cause": "" if verdict(pairs_val) == "holds" else cause})

    def paired(runs: dict[int, dict], key: str, a: str, b: str, keep=lambda row: True) -> dict[int, list[float]]:
        return {s: [row[a] - row[b] for row in d[key] if keep(row)] for s, d in runs.items()}

    # KD helps every culled network
    claim("KD helps every culled network", paired(full, "kd_vs_nokd", "val_kd", "val_nokd"),
          paired(full, "kd_vs_nokd", "test_kd", "test_nokd"),
          "each culled candidate of the search with KD minus the same network without KD",
          f"scale: the teacher is {fmt_ms(teacher_margin)} points above the best student (val) after "
          f"{setting['teacher_epochs']} epochs on {setting['train_images']:,} images; see nokd/ vs search/candidates/")
    # thinning beats alpha = 0.5
    claim("thinning beats alpha=0.5 at iso-ReLU",
          paired(full, "table2_thinning_vs_alpha", "val_thinned", "val_alpha"),
          paired(full, "table2_thinning_vs_alpha", "test_thinned", "test_alpha"),
          "first two culls: culled+thinned minus culled with alpha=0.5 (equal ReLUs)",
          "method or scale: see the per-seed Table 2 rows")
    # S1 least critical at 16x16 and 32x32: lowest other stage's C_k minus S1's (> 0: S1 is culled first)
    for title, runs, side in (("S1 least critical (16x16)", full, 16), ("S1 least critical (32x32, narrow)", crit32, 32)):
        if not runs:
            verdicts.append({"claim": title, "verdict": "not measured", "val_seed_means": [], "test_seed_means": [],
                             "pairs_ahead_val": "0/0", "verdict_test_report_only": "-", "detail": "no results",
                             "cause": "not run"})
            continue
        val, test, ranks, test_ranks, firsts = {}, {}, [], [], []
        for seed, d in runs.items():
            rows = d["criticality"]["stages"]
            scores = {r["stage"]: r["score"] for r in rows}
            val[seed] = [min(v for st, v in scores.items() if st != "s1") - scores["s1"]]
            test_scores = criticality_scores({r["stage"]: 100 * r["test_acc_kd"] for r in rows},
                                             {r["stage"]: r["relus"] for r in rows})
            test[seed] = [min(v for st, v in test_scores.items() if st != "s1") - test_scores["s1"]]
            ranks.append(least_critical_rank(d["criticality"]["order"]))
            test_ranks.append(least_critical_rank(d["order_by_test_report_only"]))
            firsts.append(d["criticality"]["order"][0].upper())
        # seed noise of the stage networks: the mean spread of a stage's val accuracy (w/ KD) over seeds
        noise = statistics.fmean(mean_spread([100 * next(r for r in d["criticality"]["stages"] if r["stage"] == st)
                                               ["val_acc_kd"] for d in runs.values()])[1]
                                 for st in ("s1", "s2", "s3", "s4"))
        gaps = [100 * (max(r["val_acc_kd"] for r in d["criticality"]["stages"])
                       - min(r["val_acc_kd"] for r in d["criticality"]["stages"])) for d in runs.values()]
        cause = (f"least critical per seed: {', '.join(firsts)}; the 4 stage networks' val accuracies span "
                 f"{fmt_ms(gaps)} points against a seed spread of {noise:.2f} per stage. "
                 + (("scale (input resolution): at 16x16 S3/S4 work on 4x4/2x2 maps and the least accurate stage "
                     "network (C_k = 0 at Eq. 1's floor) is S4; "
                     + (f"the same network at 32x32 (deepreduce_cifar10_crit32_seed*.md) puts S1 first in "
                        f"{sum(d['criticality']['order'][0] == 's1' for d in crit32.values())} of {len(crit32)} seeds"
                        if crit32 else "no 32x32 run to compare"))
                    if side == 16 else
                    f"scale: 3-epoch stage networks on 5,000 images of a width-{width(runs)[1:]} ResNet18 (the "
                    "paper: width 64, full training), so Eq. 1 ranks stages on accuracy gaps near the seed noise"))
        claim(title, val, test,
              f"lowest other stage's C_k minus S1's (Eq. 1, > 0: S1 culled first); S1's rank (1 = least critical) "
              f"per seed: val {ranks}, test {test_ranks}", cause)
    # rho: stride vs pool
    for factor, what in ((2, ("stride-2 stem on the 32x32 input (the zoo) vs pooling it to 16x16, on the thinned "
                             "networks")),
                         (4, "the candidates' rho 0.5 on top: stride-4 stem vs pooling by 4, every rho candidate")):
        keep = (lambda row, f=factor: row["downscale"] == f)
        claim(f"rho: strided stem >= pooled input (x{factor})",
              paired(full, "rho_stride_vs_pool", "val_stride", "val_pool", keep),
              paired(full, "rho_stride_vs_pool", "test_stride", "test_pool", keep),
              f"{what}; equal ReLUs and MACs; stride minus pool",
              "not a paper claim but the choice of default (method): "
              + seed_consistency([statistics.fmean(v) for v in
                                  paired(full, "rho_stride_vs_pool", "val_stride", "val_pool", keep).values() if v]))
    # thinning style: the zoo's (post-add dropped, the default) vs relucut's earlier rule (inner dropped)
    with_thin = {s: d for s, d in full.items() if d.get("thin_post_add_vs_inner")}
    if with_thin:
        claim("thinning style: post-add ReLU dropped (zoo, default) >= inner ReLU dropped",
              paired(with_thin, "thin_post_add_vs_inner", "val_post_add", "val_inner"),
              paired(with_thin, "thin_post_add_vs_inner", "test_post_add", "test_inner"),
              "every thinned network of the search, equal ReLUs; post-add minus inner",
              "not a paper claim but the choice of default (method): "
              + seed_consistency([statistics.fmean(v) for v in
                                  paired(with_thin, "thin_post_add_vs_inner", "val_post_add", "val_inner").values()
                                  if v]))
    lines += ["## Verdicts", "",
              ("| claim | val difference (points) | test difference (report only) | pairs ahead val / test | verdict "
              "(val; test) | likely cause where it fails |"), "| --- | ---: | ---: | ---: | --- | --- |"]
    for v in verdicts:
        lines.append(f"| {v['claim']} | {fmt_ms(v['val_seed_means'], signed=True)} "
                     f"| {fmt_ms(v['test_seed_means'], signed=True)} "
                     f"| {v['pairs_ahead_val']} / {v.get('pairs_ahead_test', '-')} "
                     f"| **{v['verdict']}**; {v['verdict_test_report_only']} | {v['cause'] or '-'} |")
    lines += ["", ("Differences: the mean over a seed's networks, then mean ± spread over seeds. Rows:"), ""]
    lines += [f"- {v['claim']}: {v['detail']}." for v in verdicts]

    lines += ["", f"## Criticality, 16x16 (ResNet18 {width(full)})", ""]
    crit16_lines, crit16 = crit_rows(full)
    lines += crit16_lines
    crit32_rec = {}
    if crit32:
        lines += ["", f"## Criticality, 32x32 (ResNet18 {width(crit32)})", ""]
        crit32_lines, crit32_rec = crit_rows(crit32)
        lines += crit32_lines
    lines += ["", "## Frontier per seed (validation accuracy; test report only)", ""]
    for seed, d in full.items():
        lines += [f"Seed {seed}:", "", "| network | #ReLU | MACs | val | test |", "| --- | ---: | ---: | ---: | ---: |"]
        for r in d["frontier"]:
            lines.append(f"| {r['name']} | {r['relus']:,} | {r['macs'] / 1e6:.2f}M | {100 * r['val_acc']:.2f} "
                         f"| {100 * r['test_acc']:.2f} |")
        lines.append("")
    lines += ["## Per-network controls over seeds", "", "KD (val w/ KD, val w/o KD; test w/ KD, test w/o KD):", "",
              "| culled network | #ReLU | val w/ KD | val w/o KD | test w/ KD | test w/o KD |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    # networks differ between seeds when the order does; list each network with the seeds that trained it
    for name, ks in rows_by_network(full, "kd_vs_nokd").items():
        lines.append(f"| {_label(ks[0]['culled'])} (n={len(ks)}) | {ks[0]['relus']:,} | "
                     + " | ".join(fmt_ms([k[c] for k in ks]) for c in ("val_kd", "val_nokd", "test_kd", "test_nokd"))
                     + " |")
    lines += ["", "rho (pool vs stride):", "", ("| network | reduction | #ReLU | val pool | val stride | test pool "
              "| test stride |"), "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, ks in rows_by_network(full, "rho_stride_vs_pool").items():
        lines.append(f"| {name} (n={len(ks)}) | x{ks[0]['downscale']} | {ks[0]['relus']:,} | "
                     + " | ".join(fmt_ms([k[c] for k in ks]) for c in ("val_pool", "val_stride", "test_pool",
                                                                        "test_stride")) + " |")
    minutes = {s: d["train_seconds_all_runs"] / 60 for s, d in full.items()}
    minutes32 = {s: d["train_seconds_all_runs"] / 60 for s, d in crit32.items()}
    lines += ["", "Training time (all runs, one thread): 16x16 "
              + ", ".join(f"seed {s} {m:.1f} min" for s, m in minutes.items())
              + ("; 32x32 " + ", ".join(f"seed {s} {m:.1f} min" for s, m in minutes32.items()) if minutes32 else "")
              + "."]
    summary = {"seeds_16": list(full), "seeds_32": list(crit32), "teachers": teachers,
               "teacher_minus_best_student_val": teacher_margin, "verdicts": verdicts,
               "criticality_16": crit16, "criticality_32": crit32_rec,
               "order_16": {s: d["criticality"]["order"] for s, d in full.items()},
               "order_32": {s: d["criticality"]["order"] for s, d in crit32.items()},
               "frontier": {s: d["frontier"] for s, d in full.items()}}
    atomic_write_text(RESULTS / f"{FULL_STEM}_seeds.json", json.dumps(summary, indent=1))
    atomic_write_text(RESULTS / f"{FULL_STEM}_seeds.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/relucut-bench/deepreduce-cifar10", help="runs go to OUT[/tag]/seedN")
    parser.add_argument("--data", default="/tmp/relucut-bench/cifar10-45k-5k")
    parser.add_argument("--seed", type=int, default=0, help="TrainConfig seed of every run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--criticality-epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=5000)
    parser.add_argument("--rho", type=float, default=0.5, help="the base network's input down-scaling")
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--criticality-only", action="store_true", help="teacher and stage networks only")
    parser.add_argument("--summarize", action="store_true", help="only write the summary over --seeds")
    parser.add_argument("--seeds", default="0,1", help="seeds the summary reads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core box)")
    parser.add_argument("--name", default=None, help="results file stem in bench/results ({seed} filled in)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.summarize:
        summarize(seeds)
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data_dir = held_out_layout(SOURCE, Path(args.data))
    spec = spec_for(args.base_width, args.rho)
    common = {"data_dir": str(data_dir), "val_fraction": 0.1, "batch_size": 64, "lr": 0.05, "schedule": "cosine",
              "limit_train": args.limit_train, "seed": args.seed}
    executor = SequentialExecutor(progress=False)
    if args.criticality_only:
        run_criticality_only(args, common, spec, out_dir(args), executor, started)
    else:
        run_full(args, common, spec, out_dir(args), executor, started)
    if all(full_path(s).is_file() and (RESULTS / f"{FULL_STEM}_crit32_seed{s}.json").is_file() for s in seeds):
        summarize(seeds)


if __name__ == "__main__":
    main()
