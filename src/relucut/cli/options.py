"""Options shared by commands that build a model, and their parsing into a ModelSpec."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, build_plan
from relucut.presets import get_preset

ModelArg = Annotated[str, typer.Argument(help="Zoo model name ('relucut models'), or 'package.module:factory'.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset preset: input shape and classes.")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Override the preset's class count.")]
BaseWidthOpt = Annotated[Optional[int], typer.Option("--base-width", help="First-stage width m (ResNet family).")]
WidthsOpt = Annotated[Optional[str], typer.Option("--widths", help="Per-stage widths, e.g. 64,128,256,512.")]
BlocksOpt = Annotated[Optional[str], typer.Option("--blocks", help="Per-stage block counts, e.g. 2,1,1,1.")]
AlphaOpt = Annotated[Optional[float], typer.Option("--alpha", help="Channel scaling factor (0 < alpha).")]
RhoOpt = Annotated[Optional[float], typer.Option("--rho", help="Input resolution scaling (0 < rho <= 1).")]
CullOpt = Annotated[Optional[str], typer.Option("--cull", help="Stages whose ReLUs are all removed, e.g. stem,s1.")]
ThinOpt = Annotated[Optional[str], typer.Option("--thin", help="Stages that lose every other ReLU layer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]


def parse_ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RelucutError(f"{option} takes comma-separated integers like 2,2,2,2, got '{text}'") from None


def parse_names(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def model_spec(
    model: str,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    base_width: int | None = None,
    widths: str | None = None,
    blocks: str | None = None,
    alpha: float | None = None,
    rho: float | None = None,
) -> ModelSpec:
    """Turns CLI options into a ModelSpec; only options the user gave reach the factory."""
    preset = get_preset(dataset)
    if num_classes is not None and num_classes < 1:
        raise RelucutError(f"--num-classes must be >= 1, got {num_classes}")
    kwargs = {
        "base_width": base_width,
        "widths": parse_ints(widths, "--widths"),
        "blocks": parse_ints(blocks, "--blocks"),
        "alpha": alpha,
        "rho": rho,
    }
    return ModelSpec(
        name=model,
        num_classes=num_classes or preset.num_classes,
        in_chans=preset.in_chans,
        image_size=preset.image_size,
        kwargs={k: v for k, v in kwargs.items() if v is not None},
    )



def resolve_plan(spec: ModelSpec, plan_file: str | None, cull: str | None, thin: str | None) -> ReLUPlan:
    """The plan a command runs under: ``--plan`` FILE, then ``--cull``/``--thin`` edits on top."""
    return build_plan(spec, plan_file, parse_names(cull), parse_names(thin))
