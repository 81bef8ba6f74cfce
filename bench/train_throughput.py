"""Training throughput: relucut's training step vs a plain per-sample DataLoader reference.

Same model (resnet18, CIFAR size), batch size, optimizer and loss in both; only the input pipeline
and the device settings differ:

* reference: a torch ``Dataset`` whose ``__getitem__`` does RandomCrop(32, padding=4), a random
  horizontal flip, ToTensor and Normalize per sample (plain torch ops: torchvision-like), batched by
  ``DataLoader(shuffle=True, num_workers=W)``, fp32;
* relucut: ``relucut.train.train`` itself (one epoch of ``warmup + iters`` steps over
  ``DeviceBatches``: the split in device memory, augmented in whole batches), timed per optimizer
  step by :class:`StepTimer`, in several device settings: on CPU fp32 NCHW, channels_last and
  (``--compile``) torch.compile; on CUDA fp32 and bf16 autocast + channels_last. The faster CPU
  setting is kept as the measured ``relucut`` configuration, and the results say which.

Images/s are measured after warm-up steps, in one process, one path after the other, in alternating
rounds. Each relucut row also gives the step's achieved FLOP/s (``FlopCounterMode`` on one
forward + backward: convolutions and linear layers) and, on CPU, that as a fraction of a same-run
fp32 ``torch.mm`` peak at the same thread count.
``--check-cifar DIR`` also loads real CIFAR-10 files and records the image count and channel means.

    OMP_NUM_THREADS=1 python bench/train_throughput.py --threads 1 --data-dir ../shared/data  # CPU
    python bench/train_throughput.py --device cuda --iters 50 --warmup 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from relucut.data import load_dataset
from relucut.data.splits import DataSplits, Split, channel_stats
from relucut.models import ModelSpec
from relucut.train import TrainConfig, build_model, train
from relucut.train.batches import DeviceBatches

RESULTS = Path(__file__).parent / "results"
RESNET18 = ModelSpec("resnet18", num_classes=10)


class PerSampleCIFAR(Dataset):
    """The usual public-repo pipeline: one image at a time, transformed in Python."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, mean, std, padding: int = 4):
        self.images, self.labels, self.padding = images_nhwc, labels, padding
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.images[i])  # H, W, C uint8
        h, w = img.shape[:2]
        padded = F.pad(img.permute(2, 0, 1), (self.padding,) * 4)  # RandomCrop(padding=4): zero pad
        top, left = (int(v) for v in torch.randint(0, 2 * self.padding + 1, (2,)))
        img = padded[:, top : top + h, left : left + w]
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            img = img.flip(2)
        img = img.float().div(255.0)  # ToTensor
        return (img - self.mean) / self.std, int(self.labels[i])  # Normalize


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(device: torch.device, channels_last: bool = False, spec: ModelSpec = RESNET18):
    torch.manual_seed(0)
    cfg = TrainConfig(model=spec.to_dict(), dataset="cifar10")
    model = build_model(cfg).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-4)
    return model, opt


def reference(split: Split, mean, std, device, batch: int, warmup: int, iters: int, workers: int,
              spec: ModelSpec = RESNET18) -> dict:
    model, opt = fresh_model(device, spec=spec)
    data = PerSampleCIFAR(split.images.permute(0, 2, 3, 1).numpy(), split.labels.numpy(), mean, std)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model.train()
    it = iter(loader)
    started = None
    for step in range(warmup + iters):
        if step == warmup:
            sync(device)
            started = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": iters * batch / seconds, "seconds": seconds, "steps": iters,
            "pipeline": f"DataLoader per-sample transforms, num_workers={workers}", "precision": "fp32"}


class StepTimer:
    """Marks the end of every SGD step of whatever loop runs inside it (a global optimizer hook),
    so that steady-state steps/s are read from the real training code without touching it.

    On CUDA the marks are CUDA events (no synchronization added to the loop); elsewhere wall-clock
    times. Other optimizers (e.g. Adam on mask scores) step inside the same iteration: not counted.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list = []
        self.batch_sizes: list[int] = []

    def __enter__(self) -> StepTimer:
        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, optimizer, _args, _kwargs) -> None:
        if not isinstance(optimizer, torch.optim.SGD):
            return
        if self.cuda:
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
            self.marks.append(mark)
        else:
            self.marks.append(time.perf_counter())

    @property
    def steps(self) -> int:
        return len(self.marks)

    def seconds(self, skip: int) -> float:
        """Seconds of the steps after the first ``skip`` (>= 1: the first mark starts the clock)."""
        if not 1 <= skip < len(self.marks):
            raise ValueError(f"need more than {skip} steps to time, have {len(self.marks)}")
        if self.cuda:
            torch.cuda.synchronize()
            return self.marks[skip - 1].elapsed_time(self.marks[-1]) / 1000.0
        return self.marks[-1] - self.marks[skip - 1]

    def steps_per_s(self, skip: int) -> float:
        return (len(self.marks) - skip) / self.seconds(skip)


def engine_config(spec: ModelSpec, device: torch.device, batch: int, train_images: int, epochs: int, *,
                  bf16: bool, channels_last: bool, compile: bool, data_dir: str | None = None,
                  val_fraction: float = 0.0, val_from: str = "random") -> TrainConfig:
    """The recipe both benches time: DeepReDuce's SGD, constant lr (no schedule effects), seed 0."""
    return TrainConfig(model=spec.to_dict(), dataset="cifar10", data_dir=data_dir, val_fraction=val_fraction,
                       val_from=val_from, epochs=epochs, batch_size=batch, schedule="constant", seed=0,
                       device=str(device), bf16=bf16, channels_last=channels_last, compile=compile,
                       limit_train=train_images)


def engine_run(cfg: TrainConfig, data: DataSplits, skip: int) -> dict:
    """Runs ``relucut.train.train`` in a scratch run dir; returns its steady-state rate over the
    steps after the first ``skip``, the per-epoch seconds it logged, and its final metrics."""
    with tempfile.TemporaryDirectory(prefix="relucut-bench-") as run_dir, StepTimer(cfg.device) as timer:
        final = train(cfg, run_dir, data=data, progress=False)
        epochs = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    steps_per_s = timer.steps_per_s(skip)
    return {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * cfg.batch_size,
            "steps_timed": timer.steps - skip, "steps_total": timer.steps,
            "epoch_seconds": [e["seconds"] for e in epochs], "epoch_images": [e["images"] for e in epochs],
            "final": final}


def relucut_path(data: DataSplits, device, batch: int, warmup: int, iters: int, bf16: bool,
                 channels_last: bool, compile: bool = False) -> dict:
    """One epoch of ``warmup + iters`` steps through the real engine; the last ``iters`` are timed."""
    cfg = engine_config(RESNET18, device, batch, (warmup + iters) * batch, 1, bf16=bf16,
                        channels_last=channels_last, compile=compile)
    run = engine_run(cfg, data, max(1, warmup))
    return {"images_per_s": run["images_per_s"], "seconds": run["steps_timed"] / run["steps_per_s"],
            "steps": run["steps_timed"], "pipeline": "relucut.train.train: DeviceBatches (split in device memory, "
            "batched augmentation)", "precision": "bf16 autocast" if bf16 else "fp32",
            "channels_last": channels_last, "compile": compile}


def train_flops_per_image(spec: ModelSpec = RESNET18, batch: int = 8) -> float:
    """FLOPs of one training step's forward + backward per image (convolutions and linear layers, as
    ``FlopCounterMode`` counts them), on the meta device: shapes only, no arithmetic done."""
    model = spec.build().to("meta").train()
    x = torch.empty((batch, *spec.input_size), device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """fp32 FLOP/s of a large ``torch.mm`` at the current thread count: the best of ``reps`` after one
    warm-up (the ceiling a dense step could reach on this CPU)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def pipeline_only(split: Split, mean, std, device, batch: int, steps: int, workers: int) -> dict:
    """Images/s of the input pipelines alone (augmented, normalized batches on the device; no model)."""
    data = PerSampleCIFAR(split.images.permute(0, 2, 3, 1).numpy(), split.labels.numpy(), mean, std)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    it = iter(loader)
    next(it)  # workers started
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    sync(device)
    ref = steps * batch / (time.perf_counter() - t)
    del it
    batches = DeviceBatches(split, mean, std, device, augment="crop+flip", padding=4)
    gen = torch.Generator(device=device).manual_seed(0)
    stream = batches.batches(batch, train=True, generator=gen)
    next(stream)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        x, y = next(stream)
    sync(device)
    ours = steps * batch / (time.perf_counter() - t)
    return {"reference_images_per_s": ref, "relucut_images_per_s": ours, "steps": steps, "ratio": ours / ref}


def synthetic(n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g))


def check_cifar(root: str) -> dict:
    data = load_dataset("cifar10", root, val_fraction=0.0)
    mean, std = channel_stats(data.train.images)
    return {"root": root, "images": len(data.train), "mean": [round(v, 4) for v in mean],
            "std": [round(v, 4) for v in std], "expected_mean": [0.4914, 0.4822, 0.4465],
            "labels_per_class": torch.bincount(data.train.labels, minlength=10).tolist()}


def bench_splits(split: Split) -> DataSplits:
    """The split as the engine's data: no validation images (nothing is evaluated between steps)."""
    mean, std = channel_stats(split.images)
    return DataSplits("cifar10", 10, split, split.subset(torch.arange(0)), None, mean, std)


def cpu_variants(compile: bool) -> dict[str, dict]:
    """The CPU settings tried; the faster is kept as the measured ``relucut`` configuration."""
    variants = {"relucut fp32 NCHW": {"bf16": False, "channels_last": False},
                "relucut fp32 channels_last": {"bf16": False, "channels_last": True}}
    if compile:
        variants["relucut fp32 compile"] = {"bf16": False, "channels_last": False, "compile": True}
    return variants


def cuda_variants() -> dict[str, dict]:
    return {"relucut fp32": {"bf16": False, "channels_last": False},
            "relucut bf16 channels_last": {"bf16": True, "channels_last": True}}


def atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write(results: dict, key: str, out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train_throughput.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = results
    atomic_text(path, json.dumps(merged, indent=1))
    lines = ["# Training throughput: relucut vs a per-sample DataLoader reference", "",
             "resnet18 (CIFAR size, 10 classes), SGD momentum 0.9, cross-entropy; same batch size in both.", ""]
    for name, run in merged.items():
        if name == "cifar10_check":
            continue
        lines += run_markdown(name, run)
    if "cifar10_check" in merged:
        c = merged["cifar10_check"]
        lines += ["## CIFAR-10 loader check", "",
                  (f"`{c['root']}`: {c['images']} images, per-channel mean {tuple(c['mean'])} "
                   f"(expected {tuple(c['expected_mean'])}), std {tuple(c['std'])}, "
                   f"images per class {c['labels_per_class']}."), ""]
    atomic_text(out / "train_throughput.md", "\n".join(lines))


def run_markdown(name: str, run: dict) -> list[str]:
    flops = run.get("train_flops_per_image")
    peak = run.get("matmul_peak_flop_per_s")
    lines = [f"## {name}: {run['device_name']}", "",
             (f"Size run: batch {run['batch_size']}, {run['warmup']} warm-up + {run['iters']} timed steps per path "
              f"and round, {run['rounds']} alternating rounds (median), torch {run['torch']}, {run['threads']} "
              f"threads, data: {run['data']}."), ""]
    if flops:
        lines += [(f"One training step (forward + backward, convolutions and linear layers by `FlopCounterMode`) "
                   f"is {flops / 1e9:.3f} GFLOP per image."
                   + (f" fp32 `torch.mm` peak at {run['threads']} threads, same run: "
                      f"{peak / 1e9:.1f} GFLOP/s (median of the rounds' best-of-5 {run['matmul_n']}^3 products)."
                      if peak else "")), ""]
    lines += ["| path | pipeline | precision | layout | images/s (median) | per round | x reference | GFLOP/s |"
              " fraction of mm peak |", "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    ref = run["paths"]["reference"]["images_per_s"]
    for path_name, r in run["paths"].items():
        per_round = ", ".join(f"{v:.1f}" for v in r["rounds_images_per_s"])
        layout = ("channels_last" if r.get("channels_last") else "NCHW") + (", compile" if r.get("compile") else "")
        achieved = f"{r['flop_per_s'] / 1e9:.1f}" if r.get("flop_per_s") else "-"
        fraction = f"{r['fraction_of_peak']:.2f}" if r.get("fraction_of_peak") else "-"
        lines.append(f"| {path_name} | {r['pipeline']} | {r['precision']} | {layout} | {r['images_per_s']:.1f} | "
                     f"{per_round} | {r['images_per_s'] / ref:.2f} | {achieved} | {fraction} |")
    if run.get("measured"):
        lines += ["", (f"Measured relucut configuration (the faster): **{run['measured']}**, "
                       f"{run['speedup']:.2f}x the reference"
                       + (f", {run['paths'][run['measured']]['fraction_of_peak']:.2f} of the fp32 mm peak."
                          if peak else "."))]
    p = run["pipeline_only"]
    lines += ["", (f"Input pipelines alone ({p['steps']} batches, no model): reference "
                   f"{p['reference_images_per_s']:.0f} images/s, relucut {p['relucut_images_per_s']:.0f} "
                   f"images/s ({p['ratio']:.1f}x)."), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=None, help="timed steps per path (CPU 3, GPU 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CPU 1, GPU 10)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="reference num_workers")
    parser.add_argument("--data-dir", default=None, help="real CIFAR-10 files (default: synthetic images)")
    parser.add_argument("--check-cifar", default=None, help="also verify the CIFAR-10 loader on these files")
    parser.add_argument("--rounds", type=int, default=2, help="alternate the paths this many times; report medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--compile", action="store_true", help="CPU: also try torch.compile")
    parser.add_argument("--matmul-n", type=int, default=2048, help="side of the fp32 mm timed as the CPU peak")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where train_throughput.{json,md} go")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_cuda = device.type == "cuda"
    iters = args.iters or (50 if on_cuda else 3)
    warmup = max(1, args.warmup if args.warmup is not None else (10 if on_cuda else 1))
    torch.set_num_threads(args.threads)  # explicit: the CPU figures are per thread count
    torch.manual_seed(0)
    if args.check_cifar:
        check = check_cifar(args.check_cifar)
        print(json.dumps(check))
        write(check, "cifar10_check", args.results_dir)
    need = (warmup + iters) * args.batch_size
    if args.data_dir:
        split = load_dataset("cifar10", args.data_dir, val_fraction=0.0).train
        data_name = f"CIFAR-10 from {args.data_dir}"
    else:
        split, data_name = synthetic(max(need, 22 * args.batch_size)), "synthetic uint8 images"
    if len(split) < need:
        raise SystemExit(f"need {need} images for {warmup}+{iters} steps, have {len(split)}")
    data = bench_splits(split)
    mean, std = data.mean, data.std
    runners = {"reference": lambda: reference(split, mean, std, device, args.batch_size, warmup, iters, args.workers)}
    variants = cuda_variants() if on_cuda else cpu_variants(args.compile)
    for name, settings in variants.items():
        runners[name] = lambda s=settings: relucut_path(data, device, args.batch_size, warmup, iters, **s)
    rounds: dict[str, list[dict]] = {name: [] for name in runners}
    peaks: list[float] = []
    for r in range(args.rounds):  # alternating paths evens out drifting machine load
        for name, runner in runners.items():
            rounds[name].append(runner())
            print(f"round {r + 1} {name}: {rounds[name][-1]['images_per_s']:.1f} images/s", flush=True)
        if not on_cuda:
            peaks.append(matmul_peak(args.matmul_n))
            print(f"round {r + 1} fp32 mm peak: {peaks[-1] / 1e9:.1f} GFLOP/s", flush=True)
    pipeline = pipeline_only(split, mean, std, device, args.batch_size, min(20, len(split) // args.batch_size - 1),
                             args.workers)
    print("pipelines alone:", json.dumps(pipeline), flush=True)
    flops = train_flops_per_image()
    peak = float(np.median(peaks)) if peaks else None
    paths = {}
    for name, runs in rounds.items():
        rates = [run["images_per_s"] for run in runs]
        paths[name] = {**runs[0], "images_per_s": float(np.median(rates)), "rounds_images_per_s": rates}
        paths[name].pop("seconds")
        paths[name]["flop_per_s"] = flops * paths[name]["images_per_s"]
        paths[name]["fraction_of_peak"] = paths[name]["flop_per_s"] / peak if peak else None
    measured = max(variants, key=lambda name: paths[name]["images_per_s"])
    results = {
        "device_name": torch.cuda.get_device_name(device) if on_cuda else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "iters": iters, "warmup": warmup, "rounds": args.rounds, "workers": args.workers, "data": data_name,
        "compile_tried": bool(args.compile) and not on_cuda, "paths": paths, "measured": measured,
        "speedup": paths[measured]["images_per_s"] / paths["reference"]["images_per_s"],
        "train_flops_per_image": flops, "matmul_n": args.matmul_n, "matmul_peak_flop_per_s": peak,
        "matmul_peak_rounds_flop_per_s": peaks, "pipeline_only": pipeline,
        "units": {"images_per_s": "images/s", "flop_per_s": "FLOP/s", "train_flops_per_image": "FLOP",
                  "fraction_of_peak": "achieved FLOP/s / fp32 torch.mm FLOP/s"},
    }
    write(results, "cuda" if on_cuda else "cpu", args.results_dir)
    print(f"{measured} / reference: {results['speedup']:.2f}x"
          + (f"; {paths[measured]['fraction_of_peak']:.2f} of the fp32 mm peak" if peak else ""))


if __name__ == "__main__":
    main()
