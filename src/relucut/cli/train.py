"""``relucut train`` and ``relucut eval``: train a (plan-applied) model into a resumable run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from relucut.cli.app import app
from relucut.cli.options import (
    AlphaOpt, BaseWidthOpt, BlocksOpt, CullOpt, DatasetOpt, DeviceOpt, ModelArg, NumClassesOpt, RhoOpt, ThinOpt,
    WidthsOpt, model_spec, parse_ints, resolve_plan,
)
from relucut.errors import RelucutError


@app.command()
def train(
    model: ModelArg,
    dataset: DatasetOpt = "cifar10",
    num_classes: NumClassesOpt = None,
    base_width: BaseWidthOpt = None,
    widths: WidthsOpt = None,
    blocks: BlocksOpt = None,
    alpha: AlphaOpt = None,
    rho: RhoOpt = None,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Folder (or archive) with the dataset's files.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch CIFAR into --data-dir if absent (needs internet).")] = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of the training set held out for model selection.")] = 0.1,
    val_from: Annotated[str, typer.Option("--val-from", help="random (seeded) | tail (last files, e.g. CIFAR-10's last 5,000).")] = "random",
    plan: Annotated[Optional[str], typer.Option("--plan", help="A ReLU plan JSON to apply before training.")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Run dir or checkpoint to distill from (KD).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 120,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Global batch size.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate (SGD).")] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 4e-4,
    schedule: Annotated[str, typer.Option("--schedule", help="step | cosine | constant.")] = "step",
    step_size: Annotated[Optional[int], typer.Option("--step-size", help="Step schedule: lr x gamma every N epochs (default: at 25/50/75 % of the epochs).")] = None,
    milestones: Annotated[Optional[str], typer.Option("--milestones", help="Step schedule epochs, e.g. 60,90 (overrides --step-size).")] = None,
    kd_temperature: Annotated[float, typer.Option("--kd-temperature")] = 4.0,
    kd_weight: Annotated[float, typer.Option("--kd-weight", help="Weight of the KD term; 1 - it weighs cross-entropy.")] = 0.9,
    augment: Annotated[Optional[str], typer.Option("--augment", help="crop+flip | crop | flip | none (default per dataset).")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="imagefolder: side images are resized to.")] = 32,
    limit_train: Annotated[Optional[int], typer.Option("--limit-train", help="Train on the first N training images only.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Log to RUN_DIR/tensorboard (extra).")] = False,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default runs/MODEL-DATASET-HASH).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train MODEL (with --plan, KD from --teacher) into a run directory; rerun to resume."""
    from relucut.train import TrainConfig, train as run_training

    from relucut.data import load_dataset
    from relucut.presets import PRESETS

    data = None
    if dataset.lower() in PRESETS:
        spec = model_spec(model, dataset, num_classes, base_width, widths, blocks, alpha, rho)
    else:  # an image folder: its files decide the class count; images are resized to --image-size
        spec = model_spec(model, "cifar10", num_classes, base_width, widths, blocks, alpha, rho)
        spec.image_size = image_size
        data = load_dataset(dataset, data_dir, val_fraction=val_fraction, seed=seed, image_size=image_size,
                            val_from=val_from)
        spec.num_classes = num_classes or data.num_classes
    config = TrainConfig(
        model=spec.to_dict(), dataset=dataset, data_dir=data_dir, val_fraction=val_fraction, val_from=val_from,
        plan=(resolve_plan(spec, plan, cull, thin).to_dict() if plan or cull or thin else None),
        teacher=str(Path(teacher).resolve()) if teacher else None,
        epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        schedule=schedule, step_size=step_size, milestones=parse_ints(milestones, "--milestones"),
        kd_temperature=kd_temperature, kd_weight=kd_weight, augment=augment, limit_train=limit_train,
        seed=seed, device=device, compile=compile, tensorboard=tensorboard,
    )
    digest = config.resolved().digest()  # also checks every setting before any data is read
    run_dir = Path(out) if out else Path("runs") / f"{spec.name.replace(':', '_')}-{dataset}-{digest}"
    if data is None:
        data = load_dataset(dataset, data_dir, val_fraction=val_fraction, seed=seed, download=download,
                            val_from=val_from)
    final = run_training(config, run_dir, progress=not quiet, data=data)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one answer
        typer.echo(json.dumps({"run_dir": str(run_dir), **final}))


@app.command("eval")
def evaluate_run(
    run: Annotated[str, typer.Argument(help="A run directory (its best.pt) or a checkpoint file.")],
    split: Annotated[str, typer.Option("--split", help="test | val | train.")] = "test",
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Override the run's dataset location.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "cpu",
) -> None:
    """Accuracy of a trained run (or checkpoint) on a split of its dataset; prints one JSON object."""
    from relucut.data import load_dataset
    from relucut.train import evaluate, load_checkpoint_model
    from relucut.train.distributed import Dist, resolve_device

    net = load_checkpoint_model(run)
    cfg = net.relucut_config
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                        image_size=cfg.spec().image_size, val_from=cfg.val_from)
    if data.test is None and split == "test":
        raise RelucutError(f"the {cfg.dataset} files hold no test split; use --split val")
    target = resolve_device(device, Dist())
    result = evaluate(net.to(target), data, split=split, device=target)
    typer.echo(json.dumps({"run": str(run), "dataset": cfg.dataset, "split": split, **result}))
