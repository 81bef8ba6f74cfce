"""Training throughput: relucut's training step vs a plain per-sample DataLoader reference.

Same model (resnet18, CIFAR size), batch size, optimizer and loss in both; only the input pipeline
and the device settings differ:

* reference: a torch ``Dataset`` whose ``__getitem__`` does RandomCrop(32, padding=4), a random
  horizontal flip, ToTensor and Normalize per sample (plain torch ops: torchvision-like), batched by
  ``DataLoader(shuffle=True, num_workers=W)``, fp32;
* relucut: ``relucut.train.loop.run_epoch`` (the real step code) over ``DeviceBatches`` (the split in
  device memory, augmented in whole batches), with relucut's device defaults (bf16 autocast and
  channels_last on CUDA, fp32 on CPU). On CUDA a third row isolates the pipeline: relucut in fp32.

Images/s are measured after warm-up steps, in one process, one path after the other.
``--check-cifar DIR`` also loads real CIFAR-10 files and records the image count and channel means.

    python bench/train_throughput.py                       # CPU here: a few steps (minutes)
    python bench/train_throughput.py --device cuda --iters 50 --warmup 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from relucut.data import load_dataset
from relucut.data.splits import Split, channel_stats
from relucut.models import ModelSpec
from relucut.train import TrainConfig, build_model
from relucut.train.batches import DeviceBatches
from relucut.train.distributed import Dist
from relucut.train.loop import run_epoch

RESULTS = Path(__file__).parent / "results"


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


def fresh_model(device: torch.device, channels_last: bool = False):
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelSpec("resnet18", num_classes=10).to_dict(), dataset="cifar10")
    model = build_model(cfg).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-4)
    return model, opt


def reference(split: Split, mean, std, device, batch: int, warmup: int, iters: int, workers: int) -> dict:
    model, opt = fresh_model(device)
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


class _Silent:
    enabled = False

    def step(self, info=None):
        pass


def relucut_path(split: Split, mean, std, device, batch: int, warmup: int, iters: int, bf16: bool,
                 channels_last: bool) -> dict:
    model, opt = fresh_model(device, channels_last)
    cfg = TrainConfig(model=ModelSpec("resnet18", num_classes=10).to_dict(), dataset="cifar10",
                      batch_size=batch).resolved()

    def epoch(n_steps: int, epoch_index: int) -> float:
        part = split.subset(torch.arange(n_steps * batch))
        batches = DeviceBatches(part, mean, std, device, augment="crop+flip", padding=4, channels_last=channels_last)
        sync(device)
        t = time.perf_counter()
        run_epoch(model, model, None, batches, opt, cfg, epoch_index, None, Dist(), bf16, batch, n_steps, _Silent())
        sync(device)
        return time.perf_counter() - t

    if warmup:
        epoch(warmup, 0)
    seconds = epoch(iters, 1)  # includes moving the part to the device: what an epoch pays
    return {"images_per_s": iters * batch / seconds, "seconds": seconds, "steps": iters,
            "pipeline": "DeviceBatches (split in device memory, batched augmentation)",
            "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": channels_last}


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


def write(results: dict, key: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "train_throughput.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = results
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    os.replace(tmp, path)
    lines = ["# Training throughput: relucut vs a per-sample DataLoader reference", "",
             "resnet18 (CIFAR size, 10 classes), SGD momentum 0.9, cross-entropy; same batch size in both.", ""]
    for name, run in merged.items():
        if name == "cifar10_check":
            continue
        lines += [f"## {name}: {run['device_name']}", "",
                  (f"batch {run['batch_size']}, {run['warmup']} warm-up + {run['iters']} timed steps per path and "
                   f"round, {run['rounds']} alternating rounds (median), "
                   f"torch {run['torch']}, {run['threads']} threads, data: {run['data']}"), "",
                  "| path | pipeline | precision | images/s (median) | per round | x reference |",
                  "| --- | --- | --- | ---: | --- | ---: |"]
        ref = run["paths"]["reference"]["images_per_s"]
        for path_name, r in run["paths"].items():
            per_round = ", ".join(f"{v:.1f}" for v in r["rounds_images_per_s"])
            lines.append(f"| {path_name} | {r['pipeline']} | {r['precision']} | {r['images_per_s']:.1f} | "
                         f"{per_round} | {r['images_per_s'] / ref:.2f} |")
        p = run["pipeline_only"]
        lines += ["", (f"Input pipelines alone ({p['steps']} batches, no model): reference "
                       f"{p['reference_images_per_s']:.0f} images/s, relucut {p['relucut_images_per_s']:.0f} "
                       f"images/s ({p['ratio']:.1f}x)."), ""]
    if "cifar10_check" in merged:
        c = merged["cifar10_check"]
        lines += ["## CIFAR-10 loader check", "",
                  (f"`{c['root']}`: {c['images']} images, per-channel mean {tuple(c['mean'])} "
                   f"(expected {tuple(c['expected_mean'])}), std {tuple(c['std'])}, "
                   f"images per class {c['labels_per_class']}."), ""]
    (RESULTS / "train_throughput.md").write_text("\n".join(lines))


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
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_cuda = device.type == "cuda"
    iters = args.iters or (50 if on_cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if on_cuda else 1)
    if args.check_cifar:
        check = check_cifar(args.check_cifar)
        print(json.dumps(check))
        write(check, "cifar10_check")
    need = (warmup + iters) * args.batch_size
    if args.data_dir:
        split = load_dataset("cifar10", args.data_dir, val_fraction=0.0).train
        data_name = f"CIFAR-10 from {args.data_dir}"
    else:
        split, data_name = synthetic(max(need, 22 * args.batch_size)), "synthetic uint8 images"
    if len(split) < need:
        raise SystemExit(f"need {need} images for {warmup}+{iters} steps, have {len(split)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    mean, std = channel_stats(split.images)
    runners = {"reference": lambda: reference(split, mean, std, device, args.batch_size, warmup, iters, args.workers)}
    if on_cuda:
        runners["relucut fp32"] = lambda: relucut_path(split, mean, std, device, args.batch_size, warmup, iters,
                                                       False, False)
    runners["relucut"] = lambda: relucut_path(split, mean, std, device, args.batch_size, warmup, iters,
                                              on_cuda, on_cuda)
    rounds: dict[str, list[dict]] = {name: [] for name in runners}
    for r in range(args.rounds):  # alternating paths evens out drifting machine load
        for name, runner in runners.items():
            rounds[name].append(runner())
            print(f"round {r + 1} {name}: {rounds[name][-1]['images_per_s']:.1f} images/s", flush=True)
    pipeline = pipeline_only(split, mean, std, device, args.batch_size, min(20, len(split) // args.batch_size - 1),
                             args.workers)
    print("pipelines alone:", json.dumps(pipeline), flush=True)
    paths = {}
    for name, runs in rounds.items():
        rates = [run["images_per_s"] for run in runs]
        paths[name] = {**runs[0], "images_per_s": float(np.median(rates)), "rounds_images_per_s": rates}
        paths[name].pop("seconds")
    results = {
        "device_name": torch.cuda.get_device_name(device) if on_cuda else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "iters": iters, "warmup": warmup, "rounds": args.rounds, "workers": args.workers, "data": data_name, "paths": paths,
        "speedup": paths["relucut"]["images_per_s"] / paths["reference"]["images_per_s"],
        "pipeline_only": pipeline,
    }
    write(results, "cuda" if on_cuda else "cpu")
    print(f"relucut / reference: {results['speedup']:.2f}x")


if __name__ == "__main__":
    main()
