"""The training loop: SGD + schedule, optional KD and extra loss terms, per-epoch resumable checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.train.batches import DeviceBatches, epoch_generator
from relucut.train.build import build_model, init_from, load_checkpoint_model, load_data
from relucut.train.checkpoint import (
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save, read_checkpoint, rng_state, set_rng_state,
)
from relucut.rundir import Claim, atomic_write_text, claim, json_text, read_settings, writing
from relucut.train.config import TrainConfig
from relucut.train.distributed import Dist, init_distributed, resolve_device
from relucut.train.evaluate import autocast, evaluate_batches
from relucut.train.hooks import LossContext
from relucut.train.kd import kd_loss
from relucut.train.progress import TensorBoard, TrainProgress


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how far the run got and how to go on."""

    def __init__(self, epochs_done: int, label: str = "epochs"):
        stage = "" if label == "epochs" else f" ({label})"
        super().__init__(f"interrupted after epoch {epochs_done}{stage}; rerun the same command to resume"
                         if epochs_done else
                         f"interrupted in the first epoch{stage}; rerun the same command to start it again")
        self.epochs_done = epochs_done


ExtraLoss = Callable[[LossContext], "torch.Tensor | dict[str, torch.Tensor]"]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    extra_loss: ExtraLoss | None = None,
    callbacks: Iterable[Any] = (),
    progress: bool = True,
    data: DataSplits | None = None,
    param_groups: list[dict] | None = None,
    extra_optimizers: Sequence[OptimizerFactory] = (),
    label: str = "epochs",
) -> dict:
    """Trains per ``config`` into ``run_dir`` and returns the final metrics (also in final.json).

    ``model``: a prebuilt student (e.g. with learnable masks) instead of spec + plan.
    ``teacher``: a module for KD instead of ``config.teacher`` (a run dir or checkpoint).
    ``extra_loss(ctx)``: a scalar tensor (or a dict of named ones, summed and logged) added to the
    loss each step; see :class:`LossContext`. To use intermediate activations, register forward
    hooks on ``model`` before calling ``train``; they fire during the step's forward pass.
    ``callbacks``: objects with optional ``on_epoch_start(epoch, model)``,
    ``on_epoch_end(epoch, model, metrics)`` (may add entries to ``metrics`` before they are
    logged; ``metrics["stopped"] = True`` ends training after this epoch),
    ``after_step(step, model)`` (after every optimizer step; returning True stops training there,
    mid-epoch: the epoch is logged and checkpointed as the run's last) and
    ``state_dict()`` / ``load_state_dict(state)`` (saved in every checkpoint, restored on resume).
    ``data``: already loaded splits, to skip reloading across many runs. ``label``: the progress
    bar's name (a method's stage).
    ``param_groups``: the optimizer's parameter groups (e.g. mask parameters without weight decay);
    by default one group of every parameter that requires a gradient. Schedules scale each group's lr.
    ``extra_optimizers``: factories ``f(model) -> Optimizer`` for parameters that train by their
    own rule (e.g. Adam on mask scores, constant lr); their parameters leave the main group, and
    their state is checkpointed.

    Restarted with the same config and run dir, training resumes from last.pt; on CPU the result
    is bit-identical to an uninterrupted run. On return ``model`` holds the selected weights
    (best on validation).
    """
    cfg = config.resolved()
    run_dir = Path(run_dir)
    ranks = init_distributed()
    device = resolve_device(cfg.device, ranks)
    on_cuda = device.type == "cuda"
    bf16 = on_cuda if cfg.bf16 is None else bool(cfg.bf16)
    channels_last = on_cuda if cfg.channels_last is None else bool(cfg.channels_last)
    if data is None:
        data = load_data(cfg)
    check_compatible(cfg, data)
    teacher = prepare_teacher(teacher, cfg, data, device, channels_last)
    resume, held = prepare_run_dir(run_dir, cfg, ranks)
    with held or contextlib.nullcontext():  # the folder is this run's until it returns
        seed_everything(cfg.seed)
        student = model if model is not None else build_model(cfg)
        if cfg.init and model is None and resume is None:
            init_from(student, cfg.init)  # before the optimizer and the first checkpoint see it
        student.to(device)
        if channels_last:
            student.to(memory_format=torch.channels_last)
        extras = [make(student) for make in extra_optimizers]
        own = {id(p) for opt in extras for group in opt.param_groups for p in group["params"]}
        groups = param_groups if param_groups is not None else [
            p for p in student.parameters() if p.requires_grad and id(p) not in own]
        optimizer = make_optimizer(groups, cfg)
        run = Run(cfg=cfg, run_dir=run_dir, data=data, ranks=ranks, device=device, bf16=bf16,
                  channels_last=channels_last, student=student, teacher=teacher, optimizer=optimizer,
                  scheduler=make_scheduler(optimizer, cfg), extras=extras, callbacks=list(callbacks),
                  extra_loss=extra_loss, label=label)
        run.restore(resume)
        run.start(progress)
        try:
            for epoch in range(run.state["epoch"], cfg.epochs if not run.state["stopped"] else 0):
                run.epoch(epoch)
                if run.state["stopped"]:
                    break
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # last.pt holds every finished epoch: a rerun resumes there
            raise TrainingInterrupted(run.state["epoch"], label) from None
        finally:
            run.bar.close()
            run.board.close()
        return finish(run_dir, cfg, student, data, run.state, device, bf16, ranks)


class Run:
    """One training run in progress: the student and what trains it, the batches, the state its
    checkpoints carry, and the epoch that reads and updates them."""

    def __init__(self, *, cfg: TrainConfig, run_dir: Path, data: DataSplits, ranks: Dist, device: torch.device,
                 bf16: bool, channels_last: bool, student: nn.Module, teacher: nn.Module | None, optimizer,
                 scheduler, extras: list, callbacks: list, extra_loss: ExtraLoss | None, label: str):
        self.cfg, self.run_dir, self.data, self.ranks, self.device = cfg, run_dir, data, ranks, device
        self.bf16, self.channels_last, self.student, self.teacher = bf16, channels_last, student, teacher
        self.optimizer, self.scheduler, self.extras = optimizer, scheduler, extras
        self.callbacks, self.extra_loss, self.label = callbacks, extra_loss, label
        # state["epoch"] counts finished epochs and "best_epoch" indexes from 0, inside checkpoints only;
        # metrics.jsonl and final.json number epochs from 1 (runs before "one_based_logs" logged from 0)
        self.state = {"epoch": 0, "best_val_acc": None, "best_epoch": -1, "seconds": 0.0, "stopped": False,
                      "one_based_logs": True}

    def restore(self, resume: dict | None) -> None:
        """Everything last.pt saved: weights, optimizers, schedule, callbacks, random streams, state."""
        renumber = resume is not None and "one_based_logs" not in resume["state"]
        if resume is not None:
            self.student.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            for opt, saved in zip(self.extras, resume.get("extra_optimizers", ())):
                opt.load_state_dict(saved)
            load_callback_states(self.callbacks, resume.get("callbacks", ()))
            set_rng_state(resume["rng"])
            self.state.update(resume["state"], one_based_logs=True)
            if self.ranks.main:
                repair_best(self.run_dir, resume)
                if self.state["epoch"] < self.cfg.epochs and not self.state["stopped"]:
                    print(f"resuming from epoch {self.state['epoch'] + 1} of {self.cfg.epochs} ({self.run_dir})",
                          file=sys.stderr)
        if self.ranks.main:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.state["epoch"], renumber=renumber)

    def start(self, progress: bool) -> None:
        """The module that steps (DDP, compiled), the batches, the progress display."""
        cfg, data, ranks = self.cfg, self.data, self.ranks
        self.net: nn.Module = self.student
        if ranks.world > 1:
            on_cuda = self.device.type == "cuda"
            self.net = nn.parallel.DistributedDataParallel(self.student, device_ids=[self.device.index] if on_cuda
                                                           else None)
        if cfg.compile:
            self.net = torch.compile(self.net)
        train_split = data.train
        if cfg.limit_train is not None and cfg.limit_train < len(train_split):
            train_split = train_split.subset(torch.arange(cfg.limit_train))
        self.batches = DeviceBatches(train_split, data.mean, data.std, self.device, augment=cfg.augment,
                                     padding=cfg.crop_padding, channels_last=self.channels_last)
        self.val_batches = DeviceBatches(data.val, data.mean, data.std, self.device, channels_last=self.channels_last)
        self.batch_size = max(2, cfg.batch_size // ranks.world)  # per rank
        self.steps_per_epoch = self.batches.num_batches(self.batch_size, train=True, world=ranks.world)
        self.bar = TrainProgress(progress and ranks.main, cfg.epochs, self.state["epoch"], self.label)
        self.board = TensorBoard(cfg.tensorboard and ranks.main, self.run_dir)

    def epoch(self, epoch: int) -> None:
        """One epoch: train, validate, check, log, checkpoint."""
        for cb in self.callbacks:
            _call(cb, "on_epoch_start", epoch, self.student)
        self.bar.start_epoch(epoch, self.steps_per_epoch)
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        metrics = run_epoch(self, epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - started
        val = self.validate()
        self.scheduler.step()
        metrics = {
            "epoch": epoch + 1, "lr": lr, **metrics,
            "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
            "seconds": train_seconds, "images_per_s": metrics["images"] / max(train_seconds, 1e-9),
        }
        check_finite(epoch, metrics, self.student, self.run_dir, self.cfg)  # before anything of it is kept
        for cb in self.callbacks:
            _call(cb, "on_epoch_end", epoch, self.student, metrics)
        check_finite(epoch, metrics, None, self.run_dir, self.cfg)  # what the callbacks added
        state = self.state
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch + 1
        state["stopped"] = bool(metrics.pop("stopped"))
        improved = (self.cfg.select == "last" or val is None or state["best_val_acc"] is None
                    or val["acc"] > state["best_val_acc"])
        if improved:
            state["best_val_acc"], state["best_epoch"] = (val["acc"] if val else None), epoch
        if self.ranks.main:
            self.save(metrics, improved)
        self.board.log(metrics)
        self.bar.end_epoch(metrics)
        self.ranks.barrier()

    def validate(self) -> dict | None:
        """Validation loss and accuracy (batch-norm statistics re-estimated first, where asked)."""
        cfg = self.cfg
        if cfg.bn_recalibrate:
            recalibrate_bn(self.student, self.batches, cfg.bn_recalibrate, self.batch_size, cfg.seed)
        if not len(self.val_batches):
            return None
        val = evaluate_batches(self.student, self.val_batches, cfg.eval_batch_size, self.bf16)
        if self.ranks.world > 1:  # ranks' batch-norm buffers differ: rank 0 decides
            shared = self.ranks.broadcast_(torch.tensor([val["acc"], val["loss"]], dtype=torch.float64,
                                                        device=self.device))
            val.update(acc=float(shared[0]), loss=float(shared[1]))
        return val

    def save(self, metrics: dict, improved: bool) -> None:
        """The epoch's metrics line, then last.pt (and best.pt): a kill before best.pt is written is
        repaired from last.pt on resume."""
        path = self.run_dir / "metrics.jsonl"
        line = json_text(metrics, indent=None, where=path) + "\n"
        with writing(path), open(path, "a") as f:
            f.write(line)
        last = checkpoint(self.cfg, self.student, self.data, self.state)
        last.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(), rng=rng_state(),
                    extra_optimizers=[opt.state_dict() for opt in self.extras],
                    callbacks=callback_states(self.callbacks))
        atomic_torch_save(last, self.run_dir / "last.pt")
        if improved:
            atomic_torch_save(checkpoint(self.cfg, self.student, self.data, self.state), self.run_dir / "best.pt")


def run_epoch(run: Run, epoch: int) -> dict:
    """Trains ``run`` one epoch; returns its training loss, accuracy, images and extra-loss terms."""
    net, student, teacher, cfg, ranks = run.net, run.student, run.teacher, run.cfg, run.ranks
    net.train()
    batches, steps_per_epoch = run.batches, run.steps_per_epoch
    device = batches.device
    generator = epoch_generator(cfg.seed, epoch, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    term_sums: dict[str, torch.Tensor] = {}
    seen = 0
    stopped = False
    step_hooks = [cb.after_step for cb in run.callbacks if hasattr(cb, "after_step")]
    for i, (x, y) in enumerate(batches.batches(run.batch_size, train=True, generator=generator,
                                               rank=ranks.rank, world=ranks.world)):
        with autocast(device, run.bf16):
            logits = net(x)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            if teacher_logits is not None:
                loss = kd_loss(logits, teacher_logits, y, cfg.kd_temperature, cfg.kd_weight)
            else:
                loss = F.cross_entropy(logits.float(), y)
            if run.extra_loss is not None:
                ctx = LossContext(student, x, y, logits, teacher_logits, teacher, epoch,
                                  epoch * steps_per_epoch + i, cfg)
                extra = run.extra_loss(ctx)
                if isinstance(extra, dict):
                    for name, term in extra.items():
                        term_sums[name] = term_sums.get(name, 0) + term.detach().double() * y.shape[0]
                    extra = sum(extra.values())
                loss = loss + extra
        run.optimizer.zero_grad(set_to_none=True)
        for opt in run.extras:
            opt.zero_grad(set_to_none=True)
        loss.backward()  # the one backward pass of relucut: every method trains through here
        run.optimizer.step()
        for opt in run.extras:
            opt.step()
        n = y.shape[0]
        seen += n
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum()
        run.bar.step(f"loss {float(loss_sum) / seen:.3f}" if run.bar.enabled and i % 20 == 0 else None)
        step = epoch * steps_per_epoch + i
        if any([bool(hook(step, student)) for hook in step_hooks]):  # a list: every hook runs
            stopped = True
            break
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    ranks.sum_(totals)
    images = max(int(totals[2]), 1)
    out = {"train_loss": float(totals[0]) / images, "train_acc": float(totals[1]) / images, "images": images,
           "stopped": stopped}
    for name, total in term_sums.items():
        out[name] = float(ranks.sum_(total.clone())) / images
    return out


def finish(run_dir: Path, cfg: TrainConfig, student: nn.Module, data: DataSplits, state: dict,
           device: torch.device, bf16: bool, ranks: Dist) -> dict:
    """Loads the selected (best-on-validation) weights, measures test accuracy, writes final.json."""
    best = read_checkpoint(run_dir / "best.pt") if (run_dir / "best.pt").is_file() else None
    if best is not None:
        student.load_state_dict(best["model"])
    test = None
    if data.test is not None and len(data.test):
        test_batches = DeviceBatches(data.test, data.mean, data.std, device)
        test = evaluate_batches(student, test_batches, cfg.eval_batch_size, bf16)
    if test is not None and not (math.isfinite(test["loss"]) and math.isfinite(test["acc"])):
        raise diverged(run_dir, cfg, "the selected weights' test loss is not finite")
    final = {
        "best_val_acc": state["best_val_acc"],
        "best_epoch": state["best_epoch"] + 1,  # 1-based, as metrics.jsonl and the progress display
        "first_epoch": FIRST_EPOCH,
        "test_acc": test["acc"] if test else None,
        "test_loss": test["loss"] if test else None,
        "epochs": state["epoch"],
        "seconds": state["seconds"],
        "train_images": min(len(data.train), cfg.limit_train or len(data.train)),
        "val_images": len(data.val),
        "test_images": len(data.test) if data.test is not None else 0,
        "device": str(device),
        "bf16": bf16,
        "world_size": ranks.world,
    }
    if ranks.main:
        atomic_write_text(run_dir / "final.json", json_text(final, where=run_dir / "final.json"))
    return final


FIRST_EPOCH = 1  # what final.json and metrics.jsonl call the first epoch; runs before it called it 0


def read_final(path: str | Path) -> dict | None:
    """A run's final.json (``path``: the file or its run directory) with epochs numbered from 1,
    also for runs written before (no "first_epoch": they numbered from 0); None when it is missing
    or cut short."""
    path = Path(path)
    path = path / "final.json" if path.is_dir() else path
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(final, dict):
        return None
    if "first_epoch" not in final and isinstance(final.get("best_epoch"), int):
        final = {**final, "best_epoch": final["best_epoch"] + 1, "first_epoch": FIRST_EPOCH}
    return final


def callback_states(callbacks: list) -> list:
    return [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks]


def load_callback_states(callbacks: list, states: Sequence) -> None:
    for cb, saved in zip(callbacks, states):
        if saved is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(saved)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: DeviceBatches, num_batches: int, batch_size: int, seed: int) -> None:
    """Re-estimates batch-norm running statistics as a cumulative average over ``num_batches``
    training batches: short runs at a high lr leave the running averages behind the
    weights, and eval-mode accuracy then falls far below train-mode accuracy."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    generator = torch.Generator(device=batches.device).manual_seed(int(seed) + 2**31)  # apart from epochs'
    try:
        for i, (x, _) in enumerate(batches.batches(batch_size, train=True, generator=generator)):
            model(x)
            if i + 1 >= num_batches:
                break
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def checkpoint(cfg: TrainConfig, student: nn.Module, data: DataSplits, state: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": cfg.to_dict(),
        "model": student.state_dict(), "mean": list(data.mean), "std": list(data.std), "state": dict(state),
    }


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, ranks: Dist) -> tuple[dict | None, Claim | None]:
    """Claims ``run_dir`` for this config (``relucut.rundir.claim``: same settings or none, not in
    use by another process) and returns last.pt's content to resume from, with the claim to hold."""
    saved = read_settings(run_dir) if ranks.main and Path(run_dir).is_dir() else None
    runtime = TrainConfig.comparison_runtime(saved if saved is not None else cfg.to_dict())
    held = claim(run_dir, cfg.to_dict(), runtime=runtime) if ranks.main else None
    ranks.barrier()
    try:
        resume = read_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").is_file() else None
        if resume is not None:
            differs = cfg.differences(TrainConfig.from_dict(resume["config"]))
            if differs:
                raise RelucutError(f"run directory '{run_dir}' holds a checkpoint with different {', '.join(differs)}; "
                                   "rerun with the same settings to resume, or pass a new --out")
    except BaseException:
        if held is not None:
            held.release()
        raise
    return resume, held


def repair_best(run_dir: Path, resume: dict) -> None:
    """If a kill fell between last.pt and best.pt of an improving epoch, last.pt holds the best weights."""
    state = resume["state"]
    if state["best_epoch"] != state["epoch"] - 1:
        return
    best = run_dir / "best.pt"
    if best.is_file() and read_checkpoint(best)["state"]["best_epoch"] == state["best_epoch"]:
        return
    keep = ("format", "version", "config", "model", "mean", "std", "state")
    atomic_torch_save({k: resume[k] for k in keep}, best)


def truncate_metrics(path: Path, epochs_done: int, renumber: bool = False) -> None:
    """Drops metric lines of epochs a killed run logged but never checkpointed. ``renumber``: the
    lines come from a run that numbered epochs from 0; they are rewritten numbered from 1."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            number = int(entry["epoch"]) + (1 if renumber else 0)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut short by a kill
        if number <= epochs_done:
            keep.append(json.dumps({**entry, "epoch": number}) if renumber else line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def diverged(run_dir: Path, cfg: TrainConfig, what: str, epoch: int | None = None) -> RelucutError:
    """The one-line error of a run that blew up: nothing of it is kept, and how to go on."""
    when, kept = ((f" in epoch {epoch + 1}", "nothing of that epoch was saved") if epoch is not None
                  else ("", "final.json was not written"))
    return RelucutError(f"training diverged{when}: {what}; {kept}. Train again with a lower learning rate "
                        f"(--lr, now {cfg.lr:g}) into a new --out, or delete '{run_dir}' first")


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` holding a NaN or an infinity."""
    tensors = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point() and t.numel()]
    if not tensors:
        return []
    flags = torch.stack([torch.isfinite(t).all() for _, t in tensors]).cpu()  # one device sync
    return [name for (name, _), ok in zip(tensors, flags.tolist()) if not ok]


def check_finite(epoch: int, metrics: dict, model: nn.Module | None, run_dir: Path, cfg: TrainConfig) -> None:
    """Stops a run whose loss, another logged number, or (``model`` given) a weight is not finite."""
    bad = [key for key, value in metrics.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise diverged(run_dir, cfg, f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not finite", epoch)
    broken = nonfinite_tensors(model) if model is not None else []
    if broken:
        raise diverged(run_dir, cfg, f"weights are not finite ({', '.join(broken[:3])}"
                       f"{' ...' if len(broken) > 3 else ''})", epoch)


def check_compatible(cfg: TrainConfig, data: DataSplits) -> None:
    if data.name != cfg.dataset:
        raise RelucutError(f"the data given are {data.name} but the config trains on {cfg.dataset}")
    if data.carve is not None:
        wanted = {"val_fraction": cfg.val_fraction, "seed": cfg.seed, "val_from": cfg.val_from}
        differs = [k for k in wanted if data.carve.get(k) != wanted[k]]
        if differs:
            raise RelucutError(
                f"the data given were split with a different {', '.join(differs)} than the config's; "
                "load them with relucut.train.load_data(config)"
            )
    spec = cfg.spec()
    chans, side = data.input_size[0], data.input_size[1]
    if spec.in_chans != chans or spec.image_size != side:
        raise RelucutError(
            f"model spec expects {spec.in_chans}x{spec.image_size}x{spec.image_size} inputs but "
            f"{data.name} images are {'x'.join(map(str, data.input_size))}; build the spec for this dataset"
        )
    if spec.num_classes != data.num_classes:
        raise RelucutError(
            f"model has {spec.num_classes} classes but {data.name} has {data.num_classes}; "
            "set num_classes to the dataset's"
        )


def prepare_teacher(teacher: nn.Module | None, cfg: TrainConfig, data: DataSplits, device: torch.device,
                    channels_last: bool) -> nn.Module | None:
    if teacher is None and cfg.teacher:
        teacher = load_checkpoint_model(cfg.teacher)
        taught_on = teacher.relucut_config.dataset
        if taught_on != cfg.dataset:
            raise RelucutError(
                f"teacher '{cfg.teacher}' was trained on {taught_on}, the student trains on {cfg.dataset}; "
                "use a teacher trained on the same dataset"
            )
    if teacher is None:
        return None
    teacher = teacher.to(device).eval()
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            classes = teacher(torch.zeros(2, *data.input_size, device=device)).shape[-1]
    except Exception as exc:  # the teacher cannot even take this dataset's images
        raise RelucutError(f"the teacher cannot run on {data.name} images ({exc.__class__.__name__}: {exc})") from None
    if classes != data.num_classes:
        raise RelucutError(
            f"the teacher predicts {classes} classes but {data.name} has {data.num_classes}; "
            "use a teacher trained on this dataset"
        )
    check_teacher_fit(teacher, data, device, f"teacher '{cfg.teacher}'" if cfg.teacher else "the teacher",
                      channels_last)
    return teacher


TEACHER_PROBE_IMAGES = 2000  # without a validation split: this many training images show a teacher works


def check_teacher_fit(teacher: nn.Module, data: DataSplits, device: torch.device, name: str = "the teacher",
                      channels_last: bool = False) -> None:
    """Refuses a teacher that has diverged: non-finite weights or loss, or accuracy at chance.

    Measured on the validation split (the first training images where there is none). Chance is
    the share of the most frequent class (always answering it); a teacher is at chance when its
    accuracy is within three standard errors of that (a split too small to tell is not judged)."""
    broken = nonfinite_tensors(teacher)
    if broken:
        raise RelucutError(f"{name} has non-finite weights ({', '.join(broken[:3])}): it diverged; "
                           "retrain it with a lower learning rate, or pass another teacher")
    split, what = (data.val, "validation") if len(data.val) else (
        data.train.subset(torch.arange(min(len(data.train), TEACHER_PROBE_IMAGES))), "training")
    if not len(split):
        return
    batches = DeviceBatches(split, data.mean, data.std, device, channels_last=channels_last)
    result = evaluate_batches(teacher, batches)
    if not math.isfinite(result["loss"]):
        raise RelucutError(f"{name} has a non-finite loss on the {what} split: it diverged; retrain it with "
                           "a lower learning rate, or pass another teacher")
    n = len(split)
    chance = float(torch.bincount(split.labels).max()) / n
    above = chance + 3 * math.sqrt(chance * (1 - chance) / n)  # the accuracy that shows it learned
    if above < 1 and result["acc"] <= above:  # (too few images to tell: not judged)
        raise RelucutError(f"{name} is at chance ({100 * result['acc']:.1f} % on {n:,} {what} images; always "
                           f"answering one class scores {100 * chance:.1f} %): it cannot teach. Retrain it "
                           "(longer, or with a lower learning rate if it diverged), or pass another teacher")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The weights' optimizer: SGD (momentum, Nesterov) or Adam, both with ``cfg.weight_decay``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    milestones = cfg.milestones if cfg.schedule == "step" else []
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones or []), gamma=cfg.gamma)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def _call(callback: Any, method: str, *args: Any) -> None:
    fn = getattr(callback, method, None)
    if fn is not None:
        fn(*args)
