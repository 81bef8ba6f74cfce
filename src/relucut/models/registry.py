"""String registry of model factories, timm-style: ``create_model(name, **kw)``.

A ``package.module:factory`` name is the user's own code. Naming it yourself (``ModelSpec(...)``,
``create_model``, a MODEL argument) trusts it for this process; a spec read from a file (a recipe,
a checkpoint's or run folder's config) may name one only if it is trusted, so that loading
someone else's export never imports or calls what the file names. The trusted set also takes
``--trust-factory``, ``$RELUCUT_TRUSTED_FACTORIES`` (comma-separated) and ``trusted_factories=``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from relucut.errors import RelucutError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# families of names resolved by pattern (e.g. hrn_5x5x3x): (pattern, builder of a factory from the match)
_FAMILIES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Callable[..., nn.Module]]]] = []
TRUST_ENV = "RELUCUT_TRUSTED_FACTORIES"
_TRUSTED: set[str] = set()  # factories this process's user named or trusted
_FACTORY_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers ``factory`` under its function name."""
    _REGISTRY[factory.__name__] = factory
    return factory


def register_family(
    pattern: str, builder: Callable[[re.Match[str]], Callable[..., nn.Module]]
) -> None:
    """Resolves every name that fully matches ``pattern`` to ``builder(match)``; fixed names win."""
    _FAMILIES.append((re.compile(pattern), builder))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_doc(name: str) -> str:
    doc = inspect.getdoc(_REGISTRY[name]) or ""
    return doc.splitlines()[0] if doc else ""


def is_factory_name(name: str) -> bool:
    """A ``package.module:factory`` name (user code), not a zoo model or family."""
    return ":" in str(name)


def trust_factory(*names: str) -> None:
    """Trusts each ``package.module:factory`` for the rest of this process: specs read from files
    may then name it (the user vouches for that code). Nothing is imported here."""
    for name in names:
        if not _FACTORY_NAME.fullmatch(str(name)):
            raise RelucutError(f"'{name}' is not a model factory; trust one as package.module:factory")
        _TRUSTED.add(str(name))


def trusted_factories() -> frozenset[str]:
    """The factories trusted now: named or trusted in this process, or in ``$RELUCUT_TRUSTED_FACTORIES``."""
    from_env = {n.strip() for n in os.environ.get(TRUST_ENV, "").split(",") if n.strip()}
    return frozenset(_TRUSTED | from_env)


def check_trusted(name: str) -> None:
    """Refuses a factory name read from a file unless it is trusted; imports nothing."""
    if is_factory_name(name) and str(name) not in trusted_factories():
        raise RelucutError(
            f"the file names the model factory '{name}', and relucut runs no code a file names; if it is "
            f"your own code, trust it: --trust-factory {name} (or {TRUST_ENV}={name}, or "
            f"trusted_factories=['{name}'] in Python)")


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's path, not our bug
        raise RelucutError(
            f"cannot import '{module_name}' for model '{path}' ({exc.__class__.__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); {_import_hint(module_name, exc)}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise RelucutError(f"'{attr}' in module '{module_name}' is not a callable model factory")
    return factory


def _import_hint(module_name: str, exc: Exception) -> str:
    if not isinstance(exc, ModuleNotFoundError):  # found, but it broke while importing
        if "torchvision" in module_name or "torchvision" in str(exc):
            return (f"this torchvision does not fit torch {torch.__version__}; install the build made for it "
                    "(for the CPU torch: pip install torchvision --index-url https://download.pytorch.org/whl/cpu)")
        return f"'{module_name}' is installed but fails to import; fix or reinstall it"
    if getattr(exc, "name", None) in ("torchvision", "timm"):
        index = " --index-url https://download.pytorch.org/whl/cpu" if exc.name == "torchvision" else ""
        return f"install it: pip install {exc.name}{index}"
    return "make it importable (pip install -e your package, or set PYTHONPATH)"


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    if ":" in name:
        return _import_factory(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, builder in _FAMILIES:
        match = pattern.fullmatch(name)
        if match:
            return builder(match)
    close = [m for m in _REGISTRY if name.lower() in m or m in name.lower()]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise RelucutError(
        f"unknown model '{name}'{hint}; run 'relucut models' to list the zoo, "
        "or pass 'package.module:factory' for your own"
    )


def _accepted(factory: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """For user factories: pass only keyword arguments their signature takes."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise RelucutError(f"model factory does not accept {', '.join(unknown)}; drop those options")
    return kwargs


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Builds a zoo model by name, or a user's model from ``'package.module:factory'``.

    A user factory gets ``num_classes`` and the input channels (as ``in_chans`` or ``in_channels``)
    where its signature takes them (``**kwargs`` takes ``num_classes``, and channels other than 3);
    one that cannot take ``num_classes`` gets its last ``nn.Linear`` resized (see
    :func:`build_user_model`, which also checks the output with a forward pass).
    """
    if is_factory_name(name):
        trust_factory(name)  # the caller named it: their own code
        return build_user_model(name, num_classes, in_chans, kwargs)
    factory = resolve_factory(name)
    try:
        return factory(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise RelucutError(f"model '{name}' rejected its options: {exc}") from None


def _signature(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names a factory takes, and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set(), True  # a builtin or C factory: assume it forwards keywords
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


CHANNEL_ARGS = ("in_chans", "in_channels")


def _base_kwargs(factory: Callable[..., Any], num_classes: int, in_chans: int) -> tuple[dict[str, Any], bool]:
    """The keyword arguments relucut passes, and whether the channels go by ``in_chans`` through
    ``**kwargs`` (a guess: timm's spelling, which a torchvision factory passes on and fails on)."""
    names, var_kw = _signature(factory)
    base: dict[str, Any] = {}
    if "num_classes" in names or var_kw:  # torchvision and timm forward **kwargs to the model class
        base["num_classes"] = num_classes
    channels = next((n for n in CHANNEL_ARGS if n in names), None)
    if channels:
        base[channels] = in_chans
    elif in_chans != 3 and var_kw:
        base["in_chans"] = in_chans
        return base, True
    return base, False


def _call_factory(factory: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> Any:
    try:
        return factory(**kwargs)
    except RelucutError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code failed; say where, without a traceback
        raise RelucutError(f"model factory '{name}' failed: {exc.__class__.__name__}: {exc}") from None


def _rejected_channels(exc: RelucutError) -> bool:
    return "TypeError" in str(exc) and any(arg in str(exc) for arg in CHANNEL_ARGS)


def build_user_model(name: str, num_classes: int, in_chans: int, kwargs: dict[str, Any],
                     input_size: tuple[int, ...] | None = None) -> nn.Module:
    """A user's model with ``num_classes`` outputs and ``in_chans`` input channels, never a silent
    mismatch.

    A factory that cannot take the channels (no ``in_chans``/``in_channels``; through ``**kwargs``,
    one that fails on ``in_chans``, as torchvision's do) is built for RGB and its first conv then
    reads ``in_chans`` channels (:func:`adapt_input_channels`). With ``input_size`` a forward pass
    checks the output width; a factory that could not take ``num_classes`` gets its last
    ``nn.Linear`` replaced by a fresh one of the right width.
    """
    factory = resolve_factory(name)
    base, guessed = _base_kwargs(factory, num_classes, in_chans)
    own = _accepted(factory, kwargs)
    try:
        model = _call_factory(factory, name, {**base, **own})
    except RelucutError as exc:
        if not (guessed and _rejected_channels(exc)):
            raise
        base.pop("in_chans")
        model = _call_factory(factory, name, {**base, **own})
    if not isinstance(model, nn.Module):
        raise RelucutError(f"model factory '{name}' returned {type(model).__name__}, not a torch nn.Module")
    if in_chans != 3 and not any(arg in base for arg in CHANNEL_ARGS):
        model = adapt_input_channels(model, in_chans, name, input_size)
    return fit_classes(model, num_classes, name, input_size)


def _first_conv(model: nn.Module, input_size: tuple[int, ...] | None) -> str | None:
    """The path of the first ``nn.Conv2d`` that reads 3 channels: the first one called in a forward
    pass of an RGB input of ``input_size``'s resolution, or without a size the first one registered."""
    convs = {m: path for path, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3}
    if input_size is None or not convs:
        return next(iter(convs.values()), None)
    from relucut.sites import eval_mode  # torch.fx only when a model is built for other channels

    called: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, _inputs: called.append(convs[m])) for m in convs]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros((1, 3, *input_size[1:])))
    except Exception:  # noqa: BLE001, S110 - the convs called before it failed are known; counting reports it
        pass
    finally:
        for handle in handles:
            handle.remove()
    return called[0] if called else next(iter(convs.values()))


def adapt_input_channels(model: nn.Module, in_chans: int, name: str = "the model",
                         input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Makes the first conv of an RGB ``model`` read ``in_chans`` channels: the same conv (kernel,
    stride, padding, groups of 1, bias) with ``in_chans`` inputs and fresh weights. A function of
    the architecture, so every build (a run, its export, the export's replay) does the same; the
    conv's path is kept in ``model.relucut_input_conv`` (and in an export's recipe)."""
    path = _first_conv(model, input_size)
    conv = model.get_submodule(path) if path is not None else None
    if conv is None or conv.groups != 1:
        raise RelucutError(f"model factory '{name}' takes no in_chans/in_channels and has no plain 3-channel "
                           f"first conv relucut can make read {in_chans}-channel inputs; add in_chans to the factory")
    fresh = copy.deepcopy(conv)
    fresh.in_channels = in_chans
    fresh.weight = nn.Parameter(conv.weight.new_empty((conv.out_channels, in_chans, *conv.kernel_size)))
    fresh.reset_parameters()
    model.set_submodule(path, fresh)
    model.relucut_input_conv = path
    return model


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _output_width(model: nn.Module, input_size: tuple[int, ...] | None) -> int | None:
    """The model's output width for one input, or None where it cannot say (no size, a failing
    forward that counting reports itself, or an output that is not one 2-D tensor)."""
    if input_size is None:
        return None
    from relucut.sites import eval_mode  # torch.fx only when a model is checked

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(torch.zeros((1, *input_size), device=device))
    except Exception:  # noqa: BLE001 - the shape pass of counting reports a failing forward in one line
        return None
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def fit_classes(model: nn.Module, num_classes: int, name: str, input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Makes ``model`` end in ``num_classes`` outputs, resizing its last ``nn.Linear`` head if needed."""
    width = _output_width(model, input_size)
    head = _last_linear(model)
    if width is None:  # no forward to check: trust the last Linear, the usual classifier head
        width = head[1].out_features if head is not None else num_classes
    if width == num_classes:
        return model
    if head is None or head[1].out_features != width:
        raise RelucutError(
            f"model factory '{name}' builds {width} classes, not {num_classes}, and its output is not an "
            "nn.Linear relucut can resize; make the factory take num_classes"
        )
    path, old = head
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, attr, new.to(old.weight.device, old.weight.dtype))
    if _output_width(model, input_size) not in (None, num_classes):
        raise RelucutError(f"model factory '{name}': resizing its last nn.Linear did not give {num_classes} "
                           "outputs; make the factory take num_classes")
    return model


@dataclass
class ModelSpec:
    """Everything needed to rebuild a base model: the first half of a recipe."""

    name: str
    num_classes: int = 10
    in_chans: int = 3
    image_size: int = 32
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if is_factory_name(self.name):  # built in code: the caller named it (from_dict checks first)
            trust_factory(self.name)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    def build(self) -> nn.Module:
        """The base model; a user's factory's output width is checked at this input size and its
        first conv adapted to the channels if it cannot take them (:func:`build_user_model`)."""
        if ":" in self.name:
            return build_user_model(self.name, self.num_classes, self.in_chans, self.kwargs, self.input_size)
        return create_model(self.name, num_classes=self.num_classes, in_chans=self.in_chans, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """A spec read from a file: a factory it names must be trusted (see :func:`check_trusted`)."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise RelucutError(f"malformed model spec {data!r}: it needs a model name")
        check_trusted(data["name"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise RelucutError(f"malformed model spec {data!r}: {exc}") from None
