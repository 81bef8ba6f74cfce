"""String registry of model factories, timm-style: ``create_model(name, **kw)``."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from relucut.errors import RelucutError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# families of names resolved by pattern (e.g. hrn_5x5x3x): (pattern, builder of a factory from the match)
_FAMILIES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Callable[..., nn.Module]]]] = []


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


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's path, not our bug
        raise RelucutError(
            f"cannot import '{module_name}' for model '{path}' ({exc.__class__.__name__}: {exc}); "
            "make it importable (pip install -e your package, or set PYTHONPATH)"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise RelucutError(f"'{attr}' in module '{module_name}' is not a callable model factory")
    return factory


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

    For user factories ``num_classes``/``in_chans`` are passed only if the factory takes them.
    """
    factory = resolve_factory(name)
    if ":" in name:
        params = _signature_names(factory)
        base = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if k in params}
        try:
            return factory(**base, **_accepted(factory, kwargs))
        except RelucutError:
            raise
        except Exception as exc:  # the user's code failed; say where, without a traceback
            raise RelucutError(f"model factory '{name}' failed: {exc.__class__.__name__}: {exc}") from None
    try:
        return factory(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise RelucutError(f"model '{name}' rejected its options: {exc}") from None


def _signature_names(factory: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


@dataclass
class ModelSpec:
    """Everything needed to rebuild a base model: the first half of a recipe."""

    name: str
    num_classes: int = 10
    in_chans: int = 3
    image_size: int = 32
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    def build(self) -> nn.Module:
        return create_model(self.name, num_classes=self.num_classes, in_chans=self.in_chans, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            return cls(**data)
        except TypeError as exc:
            raise RelucutError(f"malformed model spec {data!r}: {exc}") from None
