"""One command per registered method (``relucut deepreduce``, ``relucut snl``, ``relucut senet``, ...).

A method's options are derived from its config's fields (``relucut.methods.setting``: type,
default, help, choices, old names) plus the option groups every method shares, declared once in
``relucut.cli.options``: the model, the data and split, the base training recipe (which trains the
teacher, and every network of DeepReDuce and DeepReShape), execution and output. An option left
out keeps the config's default, so ``relucut snl --recipe authors`` runs the authors' lengths
unless ``--search-epochs`` / ``--finetune-epochs`` are given.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from relucut.cli.app import app, err_console
from relucut.cli.options import (
    AddressOpt, BatchOpt, CpusOpt, DeviceOpt, EpochsOpt, ExecutorOpt, GpusOpt, LimitTrainOpt, LrOpt, ModelOptions,
    OutOpt, QuietOpt, ScheduleOpt, SeedOpt, StepOpt, TeacherOpt, ThreadsOpt, ValFractionOpt, base_recipe,
    check_teacher, need_extra, parse_ints, parse_names, renamed, set_threads, with_model_options,
)
from relucut.errors import RelucutError
from relucut.methods import Method, methods

RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", help="A preset of the method's settings (see the "
                                                                   "method's docs); options given override it.")]
BaseEpochsOld = Annotated[Optional[int], typer.Option("--base-epochs", hidden=True, help="Old name of --epochs.")]

# the base recipe, execution and output options, by parameter name: (annotation, default)
_RUN = {
    "teacher": (TeacherOpt, None), "epochs": (EpochsOpt, 120), "batch_size": (BatchOpt, 128), "lr": (LrOpt, 0.1),
    "schedule": (ScheduleOpt, "step"), "step_size": (StepOpt, None), "val_fraction": (ValFractionOpt, 0.1),
    "limit_train": (LimitTrainOpt, None), "seed": (SeedOpt, 0), "device": (DeviceOpt, "auto"),
    "threads": (ThreadsOpt, None), "out": (OutOpt, None), "quiet": (QuietOpt, False), "base_epochs": (BaseEpochsOld, None),
}
_JOBS = {"executor": (ExecutorOpt, "sequential"), "address": (AddressOpt, None), "cpus_per_job": (CpusOpt, 1),
         "gpus_per_job": (GpusOpt, None)}
_MODEL = {"model", "dataset", "num_classes", "base_width", "widths", "blocks", "alpha", "rho", "data_dir", "image_size"}


@dataclasses.dataclass
class _Field:
    name: str  # the config field
    param: str  # the command's parameter
    kind: type  # int, float, str, bool, list (of ints or names), or "budget"
    default: Any
    meta: dict

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or f"--{self.name.replace('_', '-')}"


def _kind(hint: Any) -> Any:
    """The option kind of a config field's type (``int | None`` is int)."""
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(base) or base
    if origin is list:
        item = (typing.get_args(base) or (str,))[0]
        return ("ints" if item is int else "names")
    if origin in (bool, int, float, str):
        return origin
    raise TypeError(f"no command-line option for a field of type {hint}; declare it with setting(cli=False)")


def _fields(method: Method) -> list[_Field]:
    hints = typing.get_type_hints(method.config)
    out = []
    taken = set(_RUN) | set(_JOBS) | _MODEL
    for f in dataclasses.fields(method.config):
        if not f.metadata.get("cli", True):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = "budget" if f.name == "budget" else _kind(hints[f.name])
        param = f.name if f.name not in taken - {"lr"} else f"{method.name}_{f.name}"
        out.append(_Field(f.name, param, kind, default, dict(f.metadata)))
    return out


def _help(field: _Field) -> str:
    text = field.meta["help"]
    default = field.default
    if field.kind in ("ints", "names") and isinstance(default, list):
        default = ",".join(map(str, default)) or "none"
    if field.kind is not bool and default is not None and field.name != "budget":
        text += f" (default: {default})"
    if field.meta.get("choices"):
        text += f" Choices: {', '.join(field.meta['choices'])}."
    return text


def _annotation(field: _Field) -> Any:
    if field.kind is bool:
        flag = field.flag if "/" in field.flag else f"{field.flag}/--no-{field.flag[2:]}"
        return Annotated[Optional[bool], typer.Option(flag, help=_help(field) + f" (default: {'on' if field.default else 'off'})",
                                                      show_default=False)]
    python = {int: int, float: float}.get(field.kind, str)
    names = [field.flag, "-b"] if field.name == "budget" else [field.flag]
    return Annotated[Optional[python], typer.Option(*names, help=_help(field), show_default=False)]


def _aliases(fields: list[_Field]) -> dict[str, tuple[str, _Field]]:
    """Hidden old option names: parameter -> (old flag, field)."""
    out = {}
    for field in fields:
        for old in field.meta.get("aliases", ()):
            out[old.lstrip("-").replace("-", "_")] = (old, field)
    return out


def _parse(field: _Field, value: Any) -> Any:
    from relucut.budgets import parse_budget

    if field.kind == "budget":
        return parse_budget(value, field.flag)
    if field.kind == "ints":
        return parse_ints(value, field.flag, "5,8") or []
    if field.kind == "names":
        return parse_names(value) or None
    return value


def config_from_options(method: Method, given: dict[str, Any], recipe: str | None = None,
                        notes: list[str] | None = None):
    """The method's config from the options a user gave (None: not given), checked; a note for
    each old option name used goes to ``notes`` (printed once everything is checked)."""
    notes = notes if notes is not None else []
    fields = _fields(method)
    values = {}
    for field in fields:
        if given.get(field.param) is not None:
            values[field.name] = _parse(field, given[field.param])
    for param, (old, field) in _aliases(fields).items():
        if given.get(param) is not None:
            notes.append(renamed(old, field.flag))
            values[field.name] = _parse(field, given[param])
    presets = method.config.presets() if hasattr(method.config, "presets") else {}
    if recipe is not None and recipe not in presets:
        raise RelucutError(f"unknown --recipe '{recipe}'; use {' or '.join(presets) or 'none: this method has none'}")
    make = presets.get(recipe) or method.config
    try:
        config = make(**values)
    except TypeError as exc:
        raise RelucutError(f"bad {method.name} settings: {exc}") from None
    if method.cli_extra is not None:
        config = method.cli_extra(config, given)
    config.check()
    return config


def _check_budget(method: Method, config, spec) -> None:
    """A budget the network cannot be cut to is refused before anything runs."""
    if config.budget is None:
        if method.needs_budget:
            raise RelucutError(f"{method.name} needs a ReLU budget; give e.g. --budget 25k")
        return
    from relucut.cost import count
    from relucut.finegrained.budget import check_budget

    if method.needs_budget:
        check_budget(config.budget, count(spec.build(), spec.input_size).relus)


def run_method(method: Method, model: ModelOptions, given: dict[str, Any]):
    """What every method command does: options -> config and base recipe (all checked before
    anything is written) -> data -> the method's run in its folder -> its report."""
    from relucut.data import check_available
    from relucut.executors import make_executor
    from relucut.methods import MethodContext
    from relucut.train import load_data
    from relucut.train.base import base_config

    from rich.console import Console

    spec = model.spec()
    notes: list[str] = []
    config = config_from_options(method, given, given.get("recipe"), notes)
    _check_budget(method, config, spec)
    base = base_recipe(model, spec, given, "lr" not in {f.name for f in dataclasses.fields(method.config)}, notes)
    teacher = given.get("teacher")
    if teacher:  # the method starts from the teacher and labels its results with this network
        check_teacher(teacher, spec, model.dataset, full_relu=True)
    need_extra("onnx", "export", "the export's model.onnx")
    if method.name == "deepreduce":
        need_extra("matplotlib", "plot", "the frontier's pareto.png")
    check_available(model.dataset, model.data_dir)
    if given.get("threads") is not None:
        set_threads(given["threads"])
    executor = None
    if "executor" in given:
        executor = make_executor(given["executor"], given["address"], progress=not given["quiet"],
                                 cpus_per_job=given["cpus_per_job"], gpus_per_job=given["gpus_per_job"])
    out = Path(given["out"]) if given.get("out") else _default_out(method.name, model, config.budget)
    for note in notes:
        err_console.print(note, highlight=False)
    data = load_data(base)
    if executor is None or given.get("executor") == "sequential":
        executor = make_executor("sequential", None, progress=not given["quiet"], data=data)
    # --quiet turns off progress bars, not the tables: piped output (CI logs, `| tee`) gets room for them
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=140)
    ctx = MethodContext(spec=spec, data=data, base=base_config(spec, data, base), out=out,
                        teacher=Path(teacher).resolve() if teacher else None, executor=executor, console=console,
                        progress=not given["quiet"])
    result = method.run(config, ctx)
    if method.cli_report is not None:
        method.cli_report(result, ctx)
    else:
        typer.echo(json.dumps(result.summary))
    return result


def _default_out(method: str, model: ModelOptions, budget: int | None) -> Path:
    name = f"{method}-{model.model.replace(':', '_')}-{model.dataset.lower()}" + (f"-{budget}" if budget else "")
    return Path("runs") / name


def build_command(method: Method):
    """The typer command of ``method``: MODEL, the shared options, then the method's own."""
    fields = _fields(method)
    names = {f.name for f in dataclasses.fields(method.config)}
    params: list[tuple[str, Any, Any]] = []
    for field in fields:
        params.append((field.param, _annotation(field), None))
    presets = method.config.presets() if hasattr(method.config, "presets") else {}
    if presets:
        params.append(("recipe", RecipeOpt, None))
    for param, (old, field) in _aliases(fields).items():
        python = {int: int, float: float}.get(field.kind, str)
        params.append((param, Annotated[Optional[python], typer.Option(old, hidden=True, help=f"Old name of "
                                                                        f"{field.flag}.")], None))
    for name, (annotation, default) in _RUN.items():
        if name == "lr" and "lr" in names:
            continue  # the method's own --lr
        params.append((name, annotation, default))
    if method.parallel_jobs:
        params += [(name, annotation, default) for name, (annotation, default) in _JOBS.items()]
    for name, annotation, default in method.cli_options:
        params.append((name, annotation, default))

    def command(model: ModelOptions, **given: Any) -> None:
        run_method(method, model, given)

    kw = inspect.Parameter.KEYWORD_ONLY
    signature = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ModelOptions)]
    signature += [inspect.Parameter(name, kw, default=default, annotation=annotation) for name, annotation, default in params]
    command.__signature__ = inspect.Signature(signature)
    command.__annotations__ = {p.name: p.annotation for p in signature}
    command.__name__ = method.name.replace("-", "_")
    command.__doc__ = method.summary + "\n\nRerun the same command to resume; other settings in the same --out are refused."
    return with_model_options(data_dir=True)(command)


def register() -> None:
    """Adds one command per registered method to ``relucut``'s app."""
    for method in methods():
        if method.command:
            app.command(method.name)(build_command(method))


def describe(method: Method) -> dict[str, Any]:
    """A method as ``relucut methods --json`` lists it: its frontier entries and every setting."""
    settings = []
    for f in dataclasses.fields(method.config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        settings.append({"name": f.name, "default": default, "help": f.metadata.get("help", ""),
                         "choices": list(f.metadata.get("choices") or []) or None,
                         "option": (f.metadata.get("flag") or f"--{f.name.replace('_', '-')}")
                         if f.metadata.get("cli", True) else None})
    return {"name": method.name, "summary": method.summary, "config": method.config.__name__,
            "entries": method.entries(), "command": method.name if method.command else None, "settings": settings}


@app.command("methods")
def list_methods_command(
    as_json: Annotated[bool, typer.Option("--json", help="Every method with its settings as one JSON object.")] = False,
) -> None:
    """The registered methods: what each does, its frontier entries (--methods) and its settings."""
    described = [describe(m) for m in methods()]
    if as_json:
        typer.echo(json.dumps({"methods": described}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("method", "frontier entries", "what it does", title="relucut methods (relucut METHOD --help for "
                                                                      "its options)", title_justify="left")
    for m in described:
        table.add_row(m["name"], ", ".join(m["entries"]), m["summary"])
    Console().print(table)


COMMANDS: dict[str, Any] = {}


def command(name: str):
    """The command function of a method (callable from Python with the options as keywords)."""
    if name not in COMMANDS:
        from relucut.methods import get_method

        COMMANDS[name] = build_command(get_method(name))
    return COMMANDS[name]


__all__ = ["build_command", "command", "config_from_options", "register", "run_method"]
