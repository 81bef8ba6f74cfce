"""Options shared by commands, declared once, and their parsing into a ModelSpec.

Importing this module must stay cheap (no torch): ``relucut --help`` builds every command's options.
A command takes the model options as one :class:`ModelOptions` through :func:`with_model_options`::

    @app.command()
    @with_model_options()
    def count(model: ModelOptions, plan: PlanOpt = None) -> None:
        spec = model.spec()
"""

from __future__ import annotations

import functools
import inspect
import tempfile
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from relucut.errors import RelucutError

if TYPE_CHECKING:
    from relucut.models.registry import ModelSpec
    from relucut.plan import ReLUPlan

ModelArg = Annotated[str, typer.Argument(help="Zoo model name ('relucut models'), or 'package.module:factory'.")]
DatasetOpt = Annotated[str, typer.Option(
    "--dataset", "-d", help="Dataset: a preset (input shape and classes) or imagefolder (read from --data-dir).")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Override the dataset's class count.")]
BaseWidthOpt = Annotated[Optional[int], typer.Option("--base-width", help="First-stage width m (ResNet family).")]
WidthsOpt = Annotated[Optional[str], typer.Option("--widths", help="Per-stage widths, e.g. 64,128,256,512.")]
BlocksOpt = Annotated[Optional[str], typer.Option("--blocks", help="Per-stage block counts, e.g. 2,1,1,1.")]
AlphaOpt = Annotated[Optional[float], typer.Option("--alpha", help="Channel scaling factor (0 < alpha).")]
RhoOpt = Annotated[Optional[float], typer.Option("--rho", help="Input resolution scaling (0 < rho <= 1).")]
CullOpt = Annotated[Optional[str], typer.Option("--cull", help="Stages whose ReLUs are all removed, e.g. stem,s1.")]
ThinOpt = Annotated[Optional[str], typer.Option("--thin", help="Stages that lose every other ReLU layer.")]
ThinStyleOpt = Annotated[str, typer.Option(
    "--thin-style", help="Which ReLU of a block thinning drops: post_add (the authors' zoo) or inner.")]
PlanOpt = Annotated[Optional[str], typer.Option("--plan", help="A ReLU plan JSON (see 'relucut plan').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="Folder (or archive) with the dataset's files.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option(
    "--image-size", help="imagefolder: the side images are resized to (default 32).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the validation carve, initialisation and batches.")]
LimitTrainOpt = Annotated[Optional[int], typer.Option("--limit-train", help="Train on the first N training images only.")]
# the training and execution options every training command takes
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size (global, under torchrun).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Initial SGD learning rate of the base recipe.")]
EpochsOpt = Annotated[int, typer.Option(
    "--epochs", help="Epochs of the base recipe: the teacher and every network trained with it.")]
ScheduleOpt = Annotated[str, typer.Option("--schedule", help="Learning-rate schedule: step | cosine | constant.")]
StepOpt = Annotated[Optional[int], typer.Option(
    "--step-size", help="Step schedule: lr x 0.1 every N epochs (default: 30/60/90 of 120, at 50/75 % of shorter runs).")]
TeacherOpt = Annotated[Optional[str], typer.Option(
    "--teacher", help="A trained all-ReLU run dir or checkpoint (relucut train) to distill from (KD); the methods "
    "also start from it (default: they train one into the output folder).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads in this process.")]
PiThreadsOpt = Annotated[Optional[int], typer.Option("--pi-threads", help="Threads of the 2PC engine (default: the engine's).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="PI engine profile to price under: delphi, delphi-slides, sci, "
                                        "cheetah, spu-cheetah (or a profile file).")]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder; rerun the same command to resume "
                                               "(default: a folder under runs/ named after the command, model and "
                                               "dataset).")]
ValFractionOpt = Annotated[float, typer.Option(
    "--val-fraction", help="Share of the training set held out to choose networks and report.")]
CritEpochsOpt = Annotated[Optional[int], typer.Option(
    "--criticality-epochs", help="Fewer epochs for DeepReDuce's stage networks: a proxy schedule (recorded).")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="sequential | ray (one training job per worker).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: start a local Ray).")]
CpusOpt = Annotated[int, typer.Option("--cpus-per-job", help="Ray: CPUs (and torch threads) per training job.")]
GpusOpt = Annotated[Optional[float], typer.Option(
    "--gpus-per-job", help="Ray: GPU share per job, e.g. 0.25 for four small networks per GPU (default: one each).")]


@dataclass
class ModelOptions:
    """The model a command works on, as the user gave it: a name plus the options that shape it."""

    model: str
    dataset: str = "cifar10"
    num_classes: int | None = None
    base_width: int | None = None
    widths: str | None = None
    blocks: str | None = None
    alpha: float | None = None
    rho: float | None = None
    data_dir: str | None = None  # imagefolder: its class folders give the class count
    image_size: int | None = None  # imagefolder: the side images are resized to

    def spec(self) -> ModelSpec:
        """The ModelSpec; only options the user gave reach the factory."""
        return model_spec(self.model, self.dataset, self.num_classes, self.base_width, self.widths, self.blocks,
                          self.alpha, self.rho, data_dir=self.data_dir, image_size=self.image_size)

    def given(self) -> list[str]:
        """Flags of the shaping options the user set (not the model name or dataset)."""
        return [f"--{f.name.replace('_', '-')}" for f in fields(self)
                if f.name not in ("model", "dataset", "data_dir", "image_size") and getattr(self, f.name) is not None]


# the typer parameters behind ModelOptions, in --help order; MODEL's help and the dataset default vary
_SHAPING = [
    ("num_classes", NumClassesOpt, None),
    ("base_width", BaseWidthOpt, None),
    ("widths", WidthsOpt, None),
    ("blocks", BlocksOpt, None),
    ("alpha", AlphaOpt, None),
    ("rho", RhoOpt, None),
]


def with_model_options(model_arg: Any = ModelArg, dataset: Any = "cifar10", dataset_opt: Any = DatasetOpt,
                       data_dir: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replaces a command's ``model: ModelOptions`` parameter by the shared model options.

    ``model_arg``: the MODEL argument's annotation (its help text); ``dataset``: the --dataset
    default; ``data_dir``: also declare --data-dir and --image-size (commands that read data), which
    then reach the command inside ``model`` as well as under their own names if it declares them.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        names = list(signature.parameters)
        first = names[0]  # the MODEL argument takes this name (``target`` in ``pi``)
        hints = typing.get_type_hints(command, include_extras=True)  # the Annotated typer options
        if hints.get(first) is not ModelOptions:
            raise TypeError(f"{command.__name__} needs a ModelOptions as its first parameter")
        kw = inspect.Parameter.KEYWORD_ONLY
        # MODEL stays positional (commands are also called from Python: count("resnet18", ...))
        shared = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model_arg),
                  inspect.Parameter("dataset", kw, default=dataset, annotation=dataset_opt)]
        shared += [inspect.Parameter(name, kw, default=default, annotation=ann) for name, ann, default in _SHAPING]
        shared.append(inspect.Parameter("trust_factory", kw, default=None, annotation=TrustFactoryOpt))
        own = [p.replace(kind=kw, annotation=hints.get(name, p.annotation))
               for name, p in signature.parameters.items() if name != first]
        if data_dir:
            own_names = {p.name for p in own}
            shared += [inspect.Parameter(name, kw, default=None, annotation=ann)
                       for name, ann in (("data_dir", DataDirOpt), ("image_size", ImageSizeOpt))
                       if name not in own_names]
        params = shared + own
        takes = set(names)

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = wrapper.__signature__.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            trust_factories(values.pop("trust_factory", None))
            values["model"] = values[first]
            options = ModelOptions(**{f.name: values.get(f.name) for f in fields(ModelOptions)})
            passed = {k: v for k, v in values.items() if k in takes and k != first}
            return command(options, **passed)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must read the new signature, not the command's
        return wrapper

    return decorate


def parse_ints(text: str | None, option: str, example: str = "2,2,2,2") -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RelucutError(f"{option} takes comma-separated integers like {example}, got '{text}'") from None


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
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
) -> ModelSpec:
    """Turns CLI options into a ModelSpec; only options the user gave reach the factory."""
    from relucut.data import dataset_preset
    from relucut.models.registry import ModelSpec

    preset = dataset_preset(dataset, data_dir, image_size)
    if num_classes is not None and num_classes < 1:
        raise RelucutError(f"--num-classes must be >= 1, got {num_classes}")
    kwargs = {
        "base_width": base_width,
        "widths": parse_ints(widths, "--widths", "64,128,256,512"),
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


def resolve_plan(spec: ModelSpec, plan_file: str | None, cull: str | None, thin: str | None,
                 thin_style: str = "post_add") -> ReLUPlan:
    """The plan a command runs under: ``--plan`` FILE, then ``--cull``/``--thin`` edits on top."""
    from relucut.plan import build_plan

    return build_plan(spec, plan_file, parse_names(cull), parse_names(thin), thin_style=thin_style)


def check_writable(out: str, *, folder: bool) -> None:
    """Refuses, before any work, an output path that cannot be written: a folder where a file goes
    (or a file where a folder goes), or a place where nothing can be created (/proc, a read-only
    mount). The probe is a temporary folder, gone at once; permissions alone miss those places."""
    path = Path(out)
    if path.exists() and path.is_dir() != folder:
        raise RelucutError(f"'{out}' is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}; "
                           "choose another --out")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    where = existing if existing.is_dir() else existing.parent
    try:
        tempfile.TemporaryDirectory(dir=where).cleanup()
    except OSError as exc:
        raise RelucutError(f"cannot write under '{where}' ({exc.strerror}); choose another --out") from None


def need_extra(module: str, extra: str, what: str) -> None:
    """Refuses, before any work, a command whose output needs an optional package that is absent
    (found, not imported: importing onnx or matplotlib costs a second)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise RelucutError(f"{what} needs {module}; pip install 'relucut[{extra}]'")


def absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def old_flag(value: Any, old: Any) -> Any:
    """A hidden old flag name (``--lam`` for ``--kd-weight``): its value wins when it was given."""
    return value if old is None else old


def check_teacher(teacher: str, spec: ModelSpec, dataset: str, *, full_relu: bool = False) -> None:
    """Refuses a teacher run that is not this network on this dataset (the method starts from it or
    labels its rows with it), and with ``full_relu``, one trained under a ReLU plan."""
    from relucut.train.checkpoint import find_checkpoint, read_checkpoint
    from relucut.train.config import TrainConfig

    file = find_checkpoint(teacher)
    config = TrainConfig.from_dict(read_checkpoint(file)["config"])
    theirs = config.spec()
    if config.dataset != dataset.lower():
        raise RelucutError(f"teacher '{teacher}' was trained on {config.dataset}, not {dataset}; "
                           "pass a teacher trained on this dataset")
    if theirs.to_dict() != spec.to_dict():
        raise RelucutError(f"teacher '{teacher}' is {_describe(theirs)}, but the model here is {_describe(spec)}; "
                           "pass a teacher of the same network, or drop --teacher to train one")
    if full_relu and config.plan is not None and config.plan.decisions:
        raise RelucutError(f"teacher '{teacher}' was trained under a ReLU plan; the teacher must be the full-ReLU "
                           "network (train it without --plan/--cull/--thin), or drop --teacher")


def _describe(spec: ModelSpec) -> str:
    shape = ", ".join(f"{k}={v}" for k, v in sorted(spec.kwargs.items()))
    return (f"{spec.name}{f' ({shape})' if shape else ''} with {spec.num_classes} classes on "
            f"{spec.in_chans}x{spec.image_size}x{spec.image_size} inputs")


def renamed(old: str, new: str) -> str:
    return f"note: {old} is now {new}; the old name goes in the next release"


def base_recipe(model: ModelOptions, spec, given: dict[str, Any], lr_is_base: bool, notes: list[str] | None = None):
    """The base training recipe from the shared options, checked."""
    from relucut.train import TrainConfig

    epochs = given["epochs"]
    if given.get("base_epochs") is not None:
        (notes if notes is not None else []).append(renamed("--base-epochs", "--epochs"))
        epochs = given["base_epochs"]
    if given["val_fraction"] <= 0:
        raise RelucutError("the methods select networks and report on held-out images; use --val-fraction > 0")
    recipe = dict(model=spec, dataset=model.dataset.lower(), data_dir=absolute(model.data_dir),
                  val_fraction=given["val_fraction"], seed=given["seed"], limit_train=given["limit_train"],
                  epochs=epochs, batch_size=given["batch_size"], schedule=given["schedule"],
                  step_size=given["step_size"], device=given["device"])
    if lr_is_base:
        recipe["lr"] = given["lr"]
    return TrainConfig(**recipe).resolved()


def set_threads(threads: int) -> None:
    if threads < 1:
        raise RelucutError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


# -- options declared once for every command that reads files others may have written -------------
TrustFactoryOpt = Annotated[Optional[list[str]], typer.Option(
    "--trust-factory", metavar="PKG.MOD:FN",
    help="Let files (a recipe, a run's config) name this model factory of yours; repeatable. Factories named "
         "in files are refused otherwise (also: $RELUCUT_TRUSTED_FACTORIES, comma-separated).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace an export of another network at --out (never a folder holding anything else).")]


def trust_factories(names: list[str] | None) -> None:
    """Trusts the ``--trust-factory`` names for this process (see relucut.models.registry)."""
    if names:
        from relucut.models.registry import trust_factory

        trust_factory(*names)
