"""Full-scale CIFAR-10 reproduction for one GPU lease (~8 minutes of one H100), issue 22.

All 45,000 CIFAR-10 training images at full width (ResNet18, 32x32, 557,056 ReLUs; 491,520 without
the stem ReLU, the papers' count): an all-ReLU teacher, then SNL and SENet + gated branching at 50K
ReLUs, DeepReDuce's S2+S3+S4 culled network (KD from the teacher), and, time allowing, SNL at 12.9K
and SENet + GB at the shallow paper's CIFAR-10 point (82K). Test accuracy on the held-out last
5,000 training images (the official test batch is not on these machines), beside the papers'
CIFAR-10 numbers. Every stage is a ``relucut.train`` run: data resident on the GPU, bf16 autocast
and channels_last on CUDA (the engine's defaults there), no torch.compile (its warm-up time is
unpredictable).

Steps (``bench/reproduce_cifar10.sh`` wraps them):

* ``prepare`` (beside the CIFAR-10 files): writes the 50,000 images as uint8 ``.npy`` parts into
  ``.gpu_data/cifar10-part{1,2,3}`` (git-ignored), ~49 MiB each, so that one part fits one 64 MiB
  transfer to the GPU machine (carry part 1 last: it holds the test images). Part 1 holds the 5,000
  held-out test images and training images 0..11,666; part 2 11,667..28,333; part 3 28,334..44,999.
  A run uses the parts present: part 1 alone trains on 11,667 images (26 %), parts 1+2 on 28,334
  (63 %), all three on 45,000.
* ``run``: a speed probe (one teacher epoch on up to 10,000 images) sets the epochs of every stage
  so the required runs fit ``--time-budget`` seconds; optional runs go only where the measured
  seconds per epoch say they fit. After each run the table (json + markdown) is rewritten, into
  bench/results and every ``--copy-to`` folder, so a run cut short still reports what it measured.
  ``--smoke`` runs every stage on made-up data with a 2-wide network on the CPU (a test).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # relucut from this checkout (the GPU machine has no install)

from relucut.cost import count  # noqa: E402
from relucut.data.splits import DataSplits, Split, channel_stats  # noqa: E402
from relucut.finegrained.common import frozen_copy  # noqa: E402
from relucut.finegrained.senet import senet  # noqa: E402
from relucut.methods.senet import SENetConfig  # noqa: E402
from relucut.finegrained.snl import snl  # noqa: E402
from relucut.methods.snl import SNLConfig  # noqa: E402
from relucut.models.registry import ModelSpec  # noqa: E402
from relucut.plan import build_plan  # noqa: E402
from relucut.rundir import atomic_write_text, file_digest  # noqa: E402
from relucut.train import TrainConfig, load_checkpoint_model, train  # noqa: E402
from relucut.train.evaluate import evaluate  # noqa: E402

SOURCE = Path("/work/shared/data")
DATA = REPO / ".gpu_data"
RESULTS = REPO / "bench" / "results"
STEM = "reproduce_cifar10"
TRAIN_IMAGES, HELD_OUT = 45_000, 5_000
PARTS = 3
FULL_RELUS_NO_STEM = 491_520  # ResNet18 at 32x32 without its stem ReLU: the papers' count

# The papers' CIFAR-10 ResNet18 numbers (test accuracy %, ReLUs)
PAPER = {
    "teacher": "95.2 (the shallow paper's baseline; ~95 in SNL's)",
    "snl-50k": "92.27 at 49.4K (SNL)",
    "senet-gb-50k": "93.05 at 82K, 76.8K with GB (shallow paper, Table 1)",
    "deepreduce-s2s3s4": "- (CIFAR-100 only: 76.22 at 229K with KD)",
    "snl-12.9k": "88.23 at 12.9K (SNL)",
    "senet-gb-82k": "93.05 at 82K, 76.8K with GB (shallow paper, Table 1)",
}
# A stage's epoch against a plain teacher epoch (KD adds the teacher's forward; masks elementwise work).
# Starting guesses; each run's measured ratio replaces its kind's guess for the later runs.
COST = {"plain": 1.0, "kd": 1.35, "masks": 1.9}


# -- data parts -----------------------------------------------------------------------------------
def part_layout(parts: int = PARTS, train: int = TRAIN_IMAGES, held_out: int = HELD_OUT) -> list[dict]:
    """Equal-sized parts of all train + held-out images; part 1 carries the held-out test images."""
    per = -(-(train + held_out) // parts)
    layout, start = [], 0
    for k in range(1, parts + 1):
        room = per - (held_out if k == 1 else 0)
        stop = min(train, start + room)
        test = [train, train + held_out] if k == 1 else None
        layout.append({"part": k, "of": parts, "train": [start, stop], "test": test})
        start = stop
    return layout


def write_part(dest: Path, entry: dict, images: np.ndarray, labels: np.ndarray) -> dict:
    """One part folder, written whole (a temporary folder renamed into place)."""
    folder = dest / f"cifar10-part{entry['part']}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
    np.save(tmp / "labels.npy", np.ascontiguousarray(labels, dtype=np.int64))
    info = {**entry, "images": int(images.shape[0]),
            "sha256": {name: file_digest(tmp / name) for name in ("images.npy", "labels.npy")},
            "bytes": sum(f.stat().st_size for f in tmp.iterdir())}
    (tmp / "part.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return info


def prepare(source: Path, dest: Path) -> list[dict]:
    from relucut.data.cifar import load_cifar

    full, _, _ = load_cifar("cifar10", source)
    if len(full) < TRAIN_IMAGES + HELD_OUT:
        raise SystemExit(f"{source} has {len(full)} images; need the 50,000 CIFAR-10 training images")
    images, labels = full.images.numpy(), full.labels.numpy()
    out = []
    for entry in part_layout():
        index = np.arange(*entry["train"])
        if entry["test"]:
            index = np.concatenate([index, np.arange(*entry["test"])])
        out.append(write_part(dest, entry, images[index], labels[index]))
    return out


def synthetic_parts(dest: Path, train: int, held_out: int, seed: int = 0) -> list[dict]:
    """Made-up images in the parts' layout (the smoke run: no CIFAR-10 files needed)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, train + held_out)
    images = rng.integers(0, 128, (train + held_out, 3, 32, 32), dtype=np.uint8)
    for label in range(10):  # a learnable hint: each label brightens its own 8x8 tile
        row, col = divmod(label, 4)
        images[labels == label, :, 8 * row:8 * row + 8, 8 * col:8 * col + 8] += 127
    out = []
    for entry in part_layout(PARTS, train, held_out):
        index = np.arange(*entry["train"])
        if entry["test"]:
            index = np.concatenate([index, np.arange(*entry["test"])])
        out.append(write_part(dest, entry, images[index], labels[index]))
    return out


def load_parts(dest: Path) -> tuple[DataSplits, dict]:
    """The parts present under ``dest``, checked against their checksums, as train + test splits."""
    infos = []
    for folder in sorted(dest.glob("cifar10-part*")):
        if not (folder / "part.json").is_file() or folder.name.endswith(".tmp"):
            continue
        info = json.loads((folder / "part.json").read_text())
        for name, want in info["sha256"].items():
            if file_digest(folder / name) != want:
                raise SystemExit(f"{folder / name} is corrupt (checksum differs); carry that part again")
        infos.append((folder, info))
    first = [f for f, i in infos if i["test"]]
    if not first:
        raise SystemExit(f"no {dest}/cifar10-part1 (it holds the test images): run 'prepare' and carry it")
    train_x, train_y, test = [], [], None
    for folder, info in sorted(infos, key=lambda p: p[1]["train"][0]):
        x, y = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
        n = info["train"][1] - info["train"][0]
        train_x.append(x[:n])
        train_y.append(y[:n])
        if info["test"]:
            test = Split(torch.from_numpy(x[n:].copy()), torch.from_numpy(y[n:].copy()))
    train_split = Split(torch.from_numpy(np.concatenate(train_x)), torch.from_numpy(np.concatenate(train_y)))
    mean, std = channel_stats(train_split.images)
    empty = Split(torch.zeros((0, 3, 32, 32), dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    # no validation split: every run keeps its last epoch
    data = DataSplits("cifar10", 10, train_split, empty, test, mean, std)
    present = {"parts": [i["part"] for _, i in infos], "of": infos[0][1]["of"],
               "train_images": len(train_split), "test_images": len(test),
               "train_fraction": len(train_split) / TRAIN_IMAGES}
    return data, present


# -- the report, rewritten after every run --------------------------------------------------------
class Report:
    def __init__(self, folders: list[Path], setting: dict):
        self.folders = folders
        self.data = {"setting": setting, "plan": {}, "runs": {}, "skipped": [], "events": []}

    def event(self, text: str) -> None:
        print(text, flush=True)
        self.data["events"].append({"t": round(time.perf_counter() - STARTED, 1), "text": text})
        self.write()

    def write(self) -> None:
        self.data["seconds"] = time.perf_counter() - STARTED
        md = "\n".join(markdown(self.data)) + "\n"
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / f"{STEM}.json", json.dumps(self.data, indent=1, default=str))
            atomic_write_text(folder / f"{STEM}.md", md)


def markdown(d: dict) -> list[str]:
    s = d["setting"]
    lines = ["# CIFAR-10 at full scale: relucut beside the papers", "",
             f"ResNet18 ({s['model']}), {s['train_images']:,} training images "
             f"({100 * s['train_fraction']:.0f} % of 45,000; parts {s['parts']} of {s['of']}), test on the "
             f"held-out last {s['test_images']:,}. Device: {s['device']}; torch {s['torch']}. "
             f"Batch {s['batch']}; every stage keeps its last epoch."
             + (" SMOKE RUN: made-up data, a tiny network; the figures mean nothing." if s["smoke"] else ""),
             "",
             "| run | ReLUs | w/o stem | conv depth | test acc % | paper (CIFAR-10, ResNet18) | epochs "
             "| s / epoch | seconds |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for name, r in d["runs"].items():
        acc = "-" if r.get("test_acc") is None else f"{100 * r['test_acc']:.2f}"
        lines.append(f"| {r['label']} | {r.get('relus', 0):,} | {r.get('relus_without_stem', 0):,} "
                     f"| {r.get('conv_depth', '-')} | {acc} "
                     f"| {PAPER.get(name, '-')} | {r.get('epochs_text', '-')} "
                     f"| {r.get('s_per_epoch', 0):.1f} "
                     f"| {r.get('seconds', 0):.0f} |")
    if d["plan"]:
        plan = ", ".join(f"{k} {v}" for k, v in d["plan"].items())
        lines += ["", f"Plan from the speed probe: {plan}."]
    for item in d["skipped"]:
        lines.append(f"\nSkipped: {item}.")
    lines.append(f"\nWall time so far: {d.get('seconds', 0):.0f} s.")
    return lines


STARTED = time.perf_counter()


# -- the runs -------------------------------------------------------------------------------------
def epoch_seconds(run_dir: Path) -> tuple[list[float], int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["seconds"] for r in rows], len(rows)


def steady(seconds: list[float]) -> float:
    """Seconds per epoch without the first (cuDNN autotuning, allocator warm-up) where there are more."""
    return float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else 0.0


def cost_row(model: torch.nn.Module, spec: ModelSpec) -> dict:
    net = copy.deepcopy(model).cpu().eval()
    report = count(net, spec.input_size)
    return {"relus": report.relus, "relus_without_stem": report.relus_without_stem,
            "conv_depth": report.conv_depth, "macs": report.macs}


def run(args) -> dict:
    global STARTED
    STARTED = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        torch.set_num_threads(1)
        scratch = Path(tempfile.mkdtemp(prefix="relucut-reproduce-smoke-"))
        synthetic_parts(scratch / "data", train=args.smoke_images, held_out=args.smoke_images // 3)
        args.data = scratch / "data"
        args.out = args.out or scratch / "runs"
    data, present = load_parts(args.data)
    width = 2 if args.smoke else 64
    spec = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": width} if width != 64 else {})
    out = Path(args.out or "/tmp/relucut-reproduce")
    out.mkdir(parents=True, exist_ok=True)
    folders = [RESULTS] if not args.smoke else [out]
    folders += [Path(p) for p in args.copy_to if p]
    setting = {**present, "model": f"base width {width}, 32x32", "device": _device_name(device),
               "torch": torch.__version__, "batch": args.batch, "smoke": args.smoke,
               "time_budget_s": None if math.isinf(args.time_budget) else args.time_budget,
               "python": platform.python_version()}
    report = Report(folders, setting)
    report.event(f"data: {present['train_images']:,} training images (parts {present['parts']}), "
                 f"{present['test_images']:,} test; device {setting['device']}")
    total = count(spec.build(), spec.input_size)
    scale = total.relus_without_stem / FULL_RELUS_NO_STEM  # budgets scale with the network in a smoke run

    def engine(**changes) -> TrainConfig:
        return TrainConfig(model=spec.to_dict(), dataset="cifar10", batch_size=args.batch, device=str(device),
                           seed=args.seed, **changes)

    def left() -> float:
        return args.time_budget - (time.perf_counter() - STARTED)

    # speed probe: two plain epochs on up to 10,000 images (the second is timed: the first warms up)
    probe_images = min(len(data.train), 10_000)
    train(engine(epochs=2, lr=0.05, limit_train=probe_images, schedule="constant"), out / "probe", data=data,
          progress=False)
    probe_s, _ = epoch_seconds(out / "probe")
    plain = probe_s[-1] * len(data.train) / probe_images  # a full epoch
    report.data["plan"]["probe: plain epoch s"] = round(plain, 2)

    wanted = {"teacher": args.teacher_epochs, "snl_search": args.snl_search_epochs,
              "snl_finetune": args.finetune_epochs, "senet_masks": args.senet_mask_epochs,
              "senet_finetune": args.finetune_epochs, "deepreduce": args.deepreduce_epochs}
    kinds = {"teacher": "plain", "deepreduce": "kd"}  # the rest: mask stages
    units = sum(n * COST[kinds.get(key, "masks")] for key, n in wanted.items())  # in plain epochs
    shrink = max(1e-3, min(1.0, 0.9 * left() / max(units * plain, 1e-9)))
    if args.smoke:
        shrink = 1.0  # one epoch each
    epochs = {k: max(1, math.floor(v * shrink)) for k, v in wanted.items()}
    report.data["plan"].update({"shrink": round(shrink, 3), **{f"{k} epochs": v for k, v in epochs.items()}})
    report.event(f"probe: {plain:.1f} s per plain epoch; plan {epochs}")
    measured = dict(COST)

    def record(name: str, label: str, model, run_dirs: list[Path], kind: str, started: float,
               extra: dict) -> None:
        seconds = []
        for d in run_dirs:
            s, _ = epoch_seconds(d) if (d / "metrics.jsonl").is_file() else ([], 0)
            seconds += s
        per_epoch = steady(seconds)
        teacher_epoch = report.data["runs"].get("teacher", {}).get("s_per_epoch")
        if kind != "plain" and per_epoch and teacher_epoch:  # a measured ratio replaces the guess
            measured[kind] = per_epoch / teacher_epoch
        acc = evaluate(model, data, split="test", bf16=device.type == "cuda")["acc"]
        report.data["runs"][name] = {"label": label, **cost_row(model, spec), "test_acc": acc,
                                     "epochs": len(seconds), "s_per_epoch": per_epoch,
                                     "seconds": time.perf_counter() - started, **extra}
        report.event(f"{label}: {100 * acc:.2f} % test, {report.data['runs'][name]['relus']:,} ReLUs")

    # 1. the all-ReLU teacher
    t0 = time.perf_counter()
    teacher_dir = out / "teacher"
    train(engine(epochs=epochs["teacher"], lr=args.lr, weight_decay=5e-4, nesterov=True, schedule="cosine"),
          teacher_dir, data=data, progress=False)
    teacher = load_checkpoint_model(teacher_dir).to(device)
    record("teacher", "all-ReLU teacher", teacher, [teacher_dir], "plain", t0,
           {"epochs_text": str(epochs["teacher"])})
    plain = report.data["runs"]["teacher"]["s_per_epoch"] or plain
    stage_base = engine(epochs=1)

    def snl_run(name: str, budget: int, search: int, finetune: int) -> None:
        t = time.perf_counter()
        model = copy.deepcopy(teacher).cpu().train()
        cfg = SNLConfig(budget=budget, stem_relu="drop", search_epochs=search, finetune_epochs=finetune,
                        finetune_schedule="cosine", mask_lr=0.02, check_every=10)
        res = snl(model, frozen_copy(teacher), data, stage_base, cfg, out / name, progress=False)
        record(name, f"SNL @ {budget / 1000:g}K (no stem ReLU)", model,
               [out / name / "search", out / name / "finetune"], "masks", t,
               {"epochs_text": f"search {res.search_epochs_run} + fine-tune {finetune}",
                "search_epochs_run": res.search_epochs_run, "forced_topk": res.forced_topk})

    def senet_run(name: str, budget: int, masks: int, finetune: int) -> None:
        t = time.perf_counter()
        model = copy.deepcopy(teacher).cpu().train()
        milestones = sorted({m for m in (finetune // 2, (3 * finetune) // 4) if 0 < m < finetune})
        cfg = SENetConfig(budget=budget, stem_relu="drop", mask_epochs=masks, finetune_epochs=finetune,
                          milestones=milestones, shallow=True, dth=0.1)
        res = senet(model, teacher, data, stage_base, cfg, out / name, progress=False)
        record(name, f"SENet + GB @ {budget / 1000:g}K (no stem ReLU; d_th 0.1)", model,
               [out / name / "masks", out / name / "finetune"], "masks", t,
               {"epochs_text": f"masks {masks} + fine-tune {finetune}", "shallow_blocks": res.shallow_blocks})

    def deepreduce_run(name: str, run_epochs: int) -> None:
        t = time.perf_counter()
        plan = build_plan(spec, cull=["stem", "s1"])
        train(engine(epochs=run_epochs, lr=args.lr, weight_decay=5e-4, nesterov=True, schedule="cosine",
                     plan=plan, teacher=str(teacher_dir)), out / name, data=data, progress=False)
        culled = load_checkpoint_model(out / name).to(device)
        record(name, "DeepReDuce S2+S3+S4 (stem, S1 culled; KD)", culled, [out / name], "kd", t,
               {"epochs_text": str(run_epochs)})

    def at(key: str, k: float) -> int:
        return max(1, round(epochs[key] * k))

    def relus_at(relus: int) -> int:  # a budget at full width, scaled to this network
        return max(1, round(relus * scale))

    snl_epochs = epochs["snl_search"] + epochs["snl_finetune"]
    senet_epochs = epochs["senet_masks"] + epochs["senet_finetune"]
    runs = [  # (name, kind, epochs at the plan's length, run at k x the plan's length, required)
        ("snl-50k", "masks", snl_epochs,
         lambda k: snl_run("snl-50k", relus_at(50_000), at("snl_search", k), at("snl_finetune", k)), True),
        ("senet-gb-50k", "masks", senet_epochs,
         lambda k: senet_run("senet-gb-50k", relus_at(50_000), at("senet_masks", k), at("senet_finetune", k)),
         True),
        ("deepreduce-s2s3s4", "kd", epochs["deepreduce"],
         lambda k: deepreduce_run("deepreduce-s2s3s4", at("deepreduce", k)), True),
        ("snl-12.9k", "masks", snl_epochs,
         lambda k: snl_run("snl-12.9k", relus_at(12_900), at("snl_search", k), at("snl_finetune", k)), False),
        ("senet-gb-82k", "masks", senet_epochs,
         lambda k: senet_run("senet-gb-82k", relus_at(82_000), at("senet_masks", k), at("senet_finetune", k)),
         False),
    ]
    for i, (name, kind, run_epochs, go, required) in enumerate(runs):
        need = run_epochs * plain * measured[kind]
        # a required run shares the time left with the required runs after it; each may grow back to
        # the length asked for when the probe's plan had shrunk it
        later = sum(e * plain * measured[c] for _, c, e, _, r in runs[i + 1:] if r) if required else 0.0
        share = need + later
        k = min(1.0 / shrink, (left() - 10.0) / max(share, 1e-9))
        if k < (0.3 if required else 0.5):  # too short to mean anything: no row
            report.data["skipped"].append(f"{name}: needs ~{need:.0f} s, {max(0.0, left()):.0f} s left")
            report.event(f"skip {name}")
            continue
        try:
            go(k)
        except Exception as exc:  # one failed run must not cost the others' rows
            report.data["skipped"].append(f"{name}: failed ({exc.__class__.__name__}: {exc})")
            report.event(f"{name} failed: {exc}")
    report.event("done")
    return report.data


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="write .gpu_data/cifar10-part{1,2,3} from the CIFAR-10 files")
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--dest", type=Path, default=DATA)
    r = sub.add_parser("run", help="the reproduction (on the GPU machine), or --smoke on the CPU")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--out", type=Path, default=None, help="run folders (default /tmp/relucut-reproduce)")
    r.add_argument("--copy-to", action="append", default=[], help="also write the table here (e.g. $OUT)")
    r.add_argument("--smoke", action="store_true",
                   help="made-up data, a 2-wide network, CPU: every code path")
    r.add_argument("--smoke-images", type=int, default=96)
    r.add_argument("--time-budget", type=float, default=None,
                   help="seconds for everything, data loading included (default 420; --smoke: no limit)")
    r.add_argument("--batch", type=int, default=512)
    r.add_argument("--lr", type=float, default=0.2, help="teacher and DeepReDuce (SGD, cosine)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--teacher-epochs", type=int, default=30)
    r.add_argument("--snl-search-epochs", type=int, default=8, help="at most; the search stops at the budget")
    r.add_argument("--senet-mask-epochs", type=int, default=3)
    r.add_argument("--finetune-epochs", type=int, default=15, help="SNL and SENet fine-tuning")
    r.add_argument("--deepreduce-epochs", type=int, default=15)
    args = parser.parse_args()
    if args.step == "prepare":
        for info in prepare(args.source, args.dest):
            print(f"part {info['part']}: {info['images']:,} images, {info['bytes'] / 2**20:.1f} MiB "
                  f"(train {info['train']}, test {info['test']})")
        return
    if args.time_budget is None:
        args.time_budget = math.inf if args.smoke else 420.0
    if args.smoke:
        args.batch = min(args.batch, 32)
        args.teacher_epochs = 15  # the teacher must beat chance: KD refuses one that cannot teach
        args.snl_search_epochs = args.senet_mask_epochs = 1
        args.finetune_epochs = args.deepreduce_epochs = 1
    run(args)


if __name__ == "__main__":
    main()
