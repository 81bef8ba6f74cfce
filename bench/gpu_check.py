"""GPU check: ResNet18 / CIFAR-10 epoch time on relucut's engine against a per-sample DataLoader
reference, SNL search steps/s, SENet fine-tuning images/s and peak GPU memory, in one short run.

Two steps, run through ``bench/gpu_check.sh``:

* ``prepare`` (on the machine holding the full CIFAR-10 files): writes a CIFAR-10 part small enough
  to travel (default 15,360 training images of the first 45,000 and 1,000 of the held-out last
  5,000, about 48 MiB) into a git-ignored folder, in the python-pickle batch layout that
  ``relucut.data.load_dataset("cifar10", root)`` reads; the held-out images are the last ones of
  ``data_batch_5``, so ``val_from="tail"`` carves exactly them as the validation split;
* ``run`` (on the GPU): every measurement is short (a fraction of an epoch) and its result is written
  as soon as it is taken, so a run cut short still leaves what it measured. ``--smoke`` runs every
  code path on the CPU at tiny sizes; its output goes to a scratch folder, never bench/results.

Figures: engine seconds per epoch (the epoch after a warm-up epoch, as ``train`` logs it) for
bf16 / channels_last / torch.compile on and off, scaled to a 45,000-image epoch and divided into the
reference's epoch time at the same scale; steady-state images/s from the optimizer steps; SNL
search steps/s and SENet fine-tuning images/s through the fine-grained pipeline; peak GPU memory
(``torch.cuda.max_memory_allocated``) of each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: reuse its reference
from train_throughput import RESNET18, StepTimer, engine_config, engine_run, reference  # noqa: E402

from relucut.data.cifar import load_cifar  # noqa: E402
from relucut.data.splits import DataSplits  # noqa: E402
from relucut.models import ModelSpec  # noqa: E402
from relucut.train import load_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".gpu_data"
RESULTS = REPO / "bench" / "results"
SMOKE_RESULTS = Path(tempfile.gettempdir()) / "relucut-gpu-check-smoke"
CIFAR_TRAIN = 45_000  # the first 45,000 images train; the last 5,000 are held out (shared data README)
FULL_EPOCH = CIFAR_TRAIN  # every seconds-per-epoch figure is scaled to this many training images
MIB = 2**20
COMPILE_S = 120.0  # room a compiled measurement needs (its warm-up epoch compiles) before the deadline
UNITS = {"epoch_s": "s", "warmup_epoch_s": "s", "full_epoch_s": "s per 45,000-image epoch", "call_s": "s",
         "images_per_s": "images/s", "steps_per_s": "optimizer steps/s", "peak_gpu_memory_mib": "MiB (2^20 bytes)",
         "train_images": "images", "batch": "images per step"}

# The engine settings compared; compile last: its warm-up is the slowest and least predictable.
CONFIGS = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "bf16+channels_last": {"bf16": True, "channels_last": True, "compile": False},
    "bf16+channels_last+compile": {"bf16": True, "channels_last": True, "compile": True},
}


# -- prepare ------------------------------------------------------------------------------------
def prepare(source: Path, dest: Path, train_images: int, held_out: int) -> dict:
    """Writes ``dest/cifar-10-batches-py/data_batch_1..5`` (+ batches.meta) and ``dest/manifest.json``."""
    full, _, classes = load_cifar("cifar10", source)
    if len(full) < CIFAR_TRAIN + held_out or train_images > CIFAR_TRAIN:
        raise SystemExit(f"{source} has {len(full)} images; need the 50,000 CIFAR-10 training images")
    index = torch.cat([torch.arange(train_images), torch.arange(CIFAR_TRAIN, CIFAR_TRAIN + held_out)])
    images = full.images[index].reshape(len(index), -1).numpy()
    labels = full.labels[index].numpy()
    folder = dest / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(index)), 5), start=1):  # the loader wants all five
        batch = {"batch_label": f"relucut gpu-check part {i} of 5", "data": np.ascontiguousarray(images[part]),
                 "labels": labels[part].tolist()}
        _atomic_bytes(folder / f"data_batch_{i}", pickle.dumps(batch, protocol=4))
    _atomic_bytes(folder / "batches.meta", pickle.dumps({"label_names": classes, "num_vis": 3072}, protocol=4))
    manifest = {"source": os.path.relpath(source.resolve(), REPO), "train_images": train_images, "held_out_images": held_out,
                "val_fraction": held_out / (train_images + held_out), "val_from": "tail",
                "train_index": f"0..{train_images - 1}",
                "held_out_index": f"{CIFAR_TRAIN}..{CIFAR_TRAIN + held_out - 1}",
                "bytes": sum(f.stat().st_size for f in folder.iterdir())}
    _atomic_bytes(dest / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- the calls timed -----------------------------------------------------------------------------
def snl_search_call(spec: ModelSpec, data: DataSplits, out: Path, device: torch.device, *, train_images: int,
                    batch: int, seed: int) -> None:
    """One SNL search epoch (no fine-tuning) from an untrained all-ReLU teacher. The one place that
    knows how SNL is called: switch it here when SNL moves onto the engine."""
    from relucut.finegrained.pipeline import run_snl
    from relucut.methods.snl import SNLConfig

    torch.manual_seed(seed)
    teacher = spec.build()
    budget = max(1, _relus(spec) // 100)  # far below the start: the search runs its whole epoch
    cfg = SNLConfig(budget=budget, search_epochs=1, finetune_epochs=0)
    run_snl(spec, data, out, cfg, base=_stage_base(spec, data, device, train_images, batch, seed), teacher=teacher,
            progress=False)


def senet_finetune_call(spec: ModelSpec, data: DataSplits, out: Path, device: torch.device, *,
                        train_images: int, batch: int, seed: int) -> None:
    """SENet with no mask-learning epochs and one fine-tuning epoch, so that every SGD step is a
    fine-tuning step. The one place that knows how SENet is called: switch it here too."""
    from relucut.finegrained.pipeline import run_senet
    from relucut.methods.senet import SENetConfig

    torch.manual_seed(seed)
    teacher = spec.build()
    cfg = SENetConfig(budget=max(1, _relus(spec) // 10), mask_epochs=0, finetune_epochs=1, milestones=[])
    run_senet(spec, data, out, cfg, base=_stage_base(spec, data, device, train_images, batch, seed),
              teacher=teacher, progress=False)


def _stage_base(spec: ModelSpec, data: DataSplits, device: torch.device, train_images: int, batch: int, seed: int):
    """The engine config the fine-grained stages derive from (bf16/channels_last follow the device)."""
    from relucut.train import TrainConfig

    return TrainConfig(model=spec.to_dict(), dataset=data.name, limit_train=train_images, batch_size=batch,
                       seed=seed, device=str(device), val_from=(data.carve or {}).get("val_from", "random"),
                       val_fraction=(data.carve or {}).get("val_fraction", 0.1))


def _relus(spec: ModelSpec) -> int:
    from relucut.cost import count

    return count(spec.build(), spec.input_size).relus


# -- measurements --------------------------------------------------------------------------------
class Memory:
    """Peak GPU memory of one measurement (nothing on CPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak_mib: float | None = None

    def __enter__(self) -> Memory:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / MIB


def measure_reference(data: DataSplits, device: torch.device, spec: ModelSpec, s: dict) -> dict:
    with Memory(device) as mem:
        r = reference(data.train, data.mean, data.std, device, s["batch"], s["reference_warmup"],
                      s["reference_iters"], s["workers"], spec=spec)
    return {"images_per_s": r["images_per_s"], "steps_timed": r["steps"], "pipeline": r["pipeline"],
            "precision": r["precision"], "channels_last": False, "compile": False,
            "full_epoch_s": FULL_EPOCH / r["images_per_s"], "peak_gpu_memory_mib": mem.peak_mib}


def measure_engine(name: str, data: DataSplits, device: torch.device, spec: ModelSpec, s: dict) -> dict:
    """Two epochs of ``train_images``: the first warms up (and compiles), the second is the figure."""
    settings = CONFIGS[name]
    cfg = engine_config(spec, device, s["batch"], s["train_images"], 2, data_dir=str(s["data_root"]),
                        val_fraction=s["val_fraction"], val_from="tail", **settings)
    steps_per_epoch = s["train_images"] // s["batch"]
    with Memory(device) as mem:
        run = engine_run(cfg, data, skip=steps_per_epoch + 1)  # rate: the second epoch's steps
    if settings["compile"]:
        torch._dynamo.reset()  # the compiled graphs of this model are no use to the next measurement
    epoch_s, images = run["epoch_seconds"][-1], run["epoch_images"][-1]
    return {**settings, "train_images": images, "epoch_s": epoch_s, "warmup_epoch_s": run["epoch_seconds"][0],
            "full_epoch_s": epoch_s * FULL_EPOCH / images, "images_per_s": run["images_per_s"],
            "steps_timed": run["steps_timed"], "peak_gpu_memory_mib": mem.peak_mib}


def measure_finegrained(call, data: DataSplits, device: torch.device, spec: ModelSpec, s: dict) -> dict:
    """Steady-state SGD steps/s of a fine-grained call (its first ``fg_warmup`` steps untimed)."""
    with tempfile.TemporaryDirectory(prefix="relucut-gpu-check-") as out, Memory(device) as mem:
        started = time.perf_counter()
        with StepTimer(device) as timer:
            call(spec, data, Path(out) / "run", device, train_images=s["fg_train_images"], batch=s["fg_batch"],
                 seed=s["seed"])
        seconds = time.perf_counter() - started
    steps_per_s = timer.steps_per_s(s["fg_warmup"])
    return {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * s["fg_batch"], "batch": s["fg_batch"],
            "steps_timed": timer.steps - s["fg_warmup"], "steps_total": timer.steps,
            "call_s": seconds, "peak_gpu_memory_mib": mem.peak_mib}


# -- settings, device, output -------------------------------------------------------------------
def settings(args) -> dict:
    manifest = json.loads((args.data / "manifest.json").read_text()) if (args.data / "manifest.json").is_file() else None
    if manifest is None:
        raise SystemExit(f"no prepared data in {args.data}: run `bench/gpu_check.sh prepare` first")
    smoke = args.smoke
    s = {
        "smoke": smoke, "seed": 0, "data_root": args.data, "prepared": manifest,
        "val_fraction": manifest["val_fraction"],
        "model": (ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 4}) if smoke else RESNET18).to_dict(),
        "batch": 32 if smoke else 128,
        "workers": 1 if smoke else max(1, min(14, (os.cpu_count() or 2) - 2)),
        "reference_warmup": 1 if smoke else 10, "reference_iters": 2 if smoke else 50,
        "fg_batch": 32 if smoke else 128, "fg_warmup": 1 if smoke else 5,
        "configs": args.configs.split(",") if args.configs else
                   (["fp32", "bf16+channels_last", "bf16+channels_last+compile"] if smoke else list(CONFIGS)),
        "deadline_s": args.deadline_s,
    }
    full = manifest["train_images"]
    s["train_images"] = min(full, 4 * s["batch"] if smoke else full) // s["batch"] * s["batch"]  # full batches
    s["fg_train_images"] = 4 * s["fg_batch"] if smoke else min(full, 50 * s["fg_batch"])
    unknown = [c for c in s["configs"] if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    return s


def device_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}")
    else:
        info["name"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return info


def write_results(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(out / "gpu_check.json", json.dumps(results, indent=1, default=str).encode())
    _atomic_bytes(out / "gpu_check.md", "\n".join(markdown(results)).encode())


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(r: dict) -> list[str]:
    dev, s = r["device"], r["settings"]
    name = dev["name"]
    spec = s["model"]
    lines = [f"# GPU check: {name}" + (" (SMOKE: tiny CPU sizes, not a measurement)" if s["smoke"] else ""), "",
             (f"Device: {name}, torch {dev['torch']}" + (f", CUDA {dev.get('cuda')}" if dev.get("cuda") else "")
              + f", {dev['cpu_cores']} CPU cores. Model: {spec['name']} {spec['kwargs'] or ''} (CIFAR-10, "
              f"32x32), SGD momentum 0.9, batch {s['batch']}, seed {s['seed']}. Data: "
              f"{s['prepared']['train_images']:,} training + {s['prepared']['held_out_images']:,} held-out CIFAR-10 "
              f"images (prepared part). Run took {r.get('seconds', 0):.0f} s."), ""]
    ref = r.get("reference")
    lines += [f"## Epoch time on {name}", "",
              (f"Engine: `relucut.train.train`, 2 epochs of {s['train_images']:,} images; the second is timed "
               f"(seconds as the engine logs them, validation excluded) and scaled to a {FULL_EPOCH:,}-image epoch. "
               "Reference: per-sample `Dataset` + `DataLoader` "
               f"({s['workers']} workers), fp32 NCHW eager, {s['reference_warmup']} warm-up + "
               f"{s['reference_iters']} timed steps."), "",
              "| path | bf16 | channels_last | compile | s/epoch measured | images | s per 45k epoch | "
              "images/s (steady) | x reference (epoch time) | warm-up epoch s | peak GPU memory MiB |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    if ref:
        lines.append(f"| reference | no | no | no | - | - | {ref['full_epoch_s']:.2f} | {ref['images_per_s']:.0f} | "
                     f"1.00 | - | {_num(ref['peak_gpu_memory_mib'], '.0f')} |")
    for cname, e in r.get("engine", {}).items():
        if "error" in e:
            lines.append(f"| relucut {cname} | | | | error: {e['error']} | | | | | | |")
            continue
        yn = {True: "yes", False: "no"}
        ratio = ref["full_epoch_s"] / e["full_epoch_s"] if ref else None
        lines.append(f"| relucut {cname} | {yn[e['bf16']]} | {yn[e['channels_last']]} | {yn[e['compile']]} | "
                     f"{e['epoch_s']:.2f} | {e['train_images']:,} | {e['full_epoch_s']:.2f} | "
                     f"{e['images_per_s']:.0f} | {_num(ratio, '.2f')} | {e['warmup_epoch_s']:.1f} | "
                     f"{_num(e['peak_gpu_memory_mib'], '.0f')} |")
    fg = r.get("finegrained", {})
    if fg:
        lines += ["", f"## Fine-grained methods on {name}", "",
                  (f"As `snl_search_call` / `senet_finetune_call` in bench/gpu_check.py call them (SNL: one search "
                   f"epoch; SENet: one fine-tuning epoch), {s['fg_train_images']:,} training images, batch "
                   f"{s['fg_batch']}, untrained all-ReLU teacher; rates over the SGD steps after the first "
                   f"{s['fg_warmup']}."), "",
                  "| measurement | steps/s | images/s | steps timed | whole call s | peak GPU memory MiB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for fname, f in fg.items():
            if "error" in f:
                lines.append(f"| {fname} | error: {f['error']} | | | | |")
                continue
            lines.append(f"| {fname} | {f['steps_per_s']:.2f} | {f['images_per_s']:.0f} | {f['steps_timed']} | "
                         f"{f['call_s']:.1f} | {_num(f['peak_gpu_memory_mib'], '.0f')} |")
    if r.get("skipped"):
        lines += ["", f"Skipped (past the {s['deadline_s']} s deadline): {', '.join(r['skipped'])}."]
    lines += ["", "Units: s = seconds; images/s and steps/s per second of wall-clock time (between CUDA events "
              "on the GPU); MiB = 2^20 bytes (`torch.cuda.max_memory_allocated`, reset before each row).", ""]
    return lines


# -- main ---------------------------------------------------------------------------------------
def run(args) -> dict:
    s = settings(args)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device; run with --smoke to check the code paths on the CPU")
    if args.smoke and args.results.resolve() == RESULTS.resolve():
        raise SystemExit("smoke figures never go to bench/results; pass another --results folder")
    torch.manual_seed(s["seed"])
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    started = time.perf_counter()
    spec = ModelSpec.from_dict(s["model"])
    cfg = engine_config(spec, device, s["batch"], s["train_images"], 2, data_dir=str(s["data_root"]),
                        val_fraction=s["val_fraction"], val_from="tail", bf16=False, channels_last=False,
                        compile=False)
    data = load_data(cfg)
    assert len(data.val) == s["prepared"]["held_out_images"], "the tail carve must be the held-out images"
    results = {"device": device_info(device), "units": UNITS, "settings": s, "engine": {}, "finegrained": {}, "skipped": []}

    def step(label: str, fn, store: dict | None, key: str | None = None, needs_s: float = 0.0) -> None:
        # a measurement that could not finish before the deadline is not started: the hard stop
        # of gpu_check.sh would kill it before its figures are written
        if time.perf_counter() - started + needs_s > args.deadline_s:
            results["skipped"].append(label)
            return
        print(f"[{time.perf_counter() - started:6.1f} s] {label} ...", flush=True)
        try:
            value = fn()
        except Exception as exc:  # one broken measurement must not lose the others
            if args.smoke:
                raise
            value = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if store is None:
            results[key] = value
        else:
            store[key or label] = value
        print(f"    {json.dumps(value, default=str)[:400]}", flush=True)
        results["seconds"] = time.perf_counter() - started
        write_results(args.results, results)

    step("reference", lambda: measure_reference(data, device, spec, s), None, "reference")
    fine = {"snl search": snl_search_call, "senet fine-tune": senet_finetune_call}
    engine = [c for c in s["configs"] if not CONFIGS[c]["compile"]]
    compiled = [c for c in s["configs"] if CONFIGS[c]["compile"]]
    for name in engine:
        step(name, lambda n=name: measure_engine(n, data, device, spec, s), results["engine"])
    for name, call in fine.items():
        step(name, lambda c=call: measure_finegrained(c, data, device, spec, s), results["finegrained"])
    for name in compiled:
        step(name, lambda n=name: measure_engine(n, data, device, spec, s), results["engine"],
             needs_s=0.0 if args.smoke else COMPILE_S)
    results["seconds"] = time.perf_counter() - started
    write_results(args.results, results)
    print("\n".join(markdown(results)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the CIFAR-10 part that travels to the GPU machine")
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "cifar-10-batches-py")
    p.add_argument("--dest", type=Path, default=DATA)
    p.add_argument("--train-images", type=int, default=15_360, help="of the first 45,000 (120 batches of 128)")
    p.add_argument("--held-out", type=int, default=1_000, help="of the last 5,000")
    r = sub.add_parser("run", help="measure (on the GPU, or --smoke on the CPU)")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the code paths only")
    r.add_argument("--results", type=Path, default=None,
                   help=f"output folder (default {RESULTS.relative_to(REPO)}; with --smoke {SMOKE_RESULTS})")
    r.add_argument("--configs", default=None, help=f"comma-separated engine settings of {', '.join(CONFIGS)}")
    r.add_argument("--deadline-s", type=float, default=400.0, help="start no measurement after this many seconds")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.command == "prepare":
        print(json.dumps(prepare(args.source, args.dest, args.train_images, args.held_out), indent=1))
        return
    if args.results is None:
        args.results = SMOKE_RESULTS if args.smoke else RESULTS
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
