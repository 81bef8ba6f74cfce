"""The method registry: one registration per method, and the loops that read it.

    @register_method(SNLConfig, variants={"snl-channel": {"granularity": "channel"}}, order=30)
    def run(config: SNLConfig, ctx: MethodContext) -> MethodResult: ...

A registration names the config class, the function that runs it to one exported network at the
config's budget, and optionally:
- ``variants``: frontier entries that are the method with some settings fixed (``snl-channel``);
- ``frontier``: how the method takes part in a frontier over several budgets (default: one run
  per budget below the full network's ReLUs, each in ``OUT/<entry>/<budget>``);
- ``order``: where its runs go in a frontier (coarse and cheap methods first);
- ``command``: its CLI command's options beyond the config's fields (see ``relucut.cli.methods``).

Every module in the ``relucut.methods`` package whose name does not start with ``_`` is a method:
``relucut.reduce``, ``relucut.frontier`` and the CLI import them all and loop over the registry,
so adding a method is adding one module there (and its tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relucut.errors import RelucutError
from relucut.methods._config import MethodConfig

_METHODS: dict[str, Method] = {}
_LOADED = False


@dataclass(frozen=True)
class Method:
    name: str
    config: type[MethodConfig]
    run: Callable[..., Any]  # (config, MethodContext) -> MethodResult
    summary: str
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    frontier: Callable[..., Any] | None = None  # (entry, template, budgets, FrontierRun) -> list[FrontierStep]
    order: int = 100
    needs_budget: bool = True  # False: the method also runs without a budget (DeepReDuce: its whole frontier)
    parallel_jobs: bool = False  # its training jobs can spread over Ray (--executor ray)
    command: bool = True  # a `relucut NAME` command derived from the config (False: the method has its own)
    cli_options: tuple = ()  # extra command options beyond the config's fields: (parameter, annotation, default)
    cli_extra: Callable[..., Any] | None = None  # (config, given options) -> config: what the extra options do
    cli_report: Callable[..., Any] | None = None  # (MethodResult, ctx) -> None: what the command prints

    def entries(self) -> dict[str, dict[str, Any]]:
        """Frontier entries: the method itself, then its variants, each with its fixed settings."""
        return {self.name: {}, **self.variants}

    def make_config(self, entry: str | None = None, **values: Any) -> MethodConfig:
        """A config with ``values`` (and ``entry``'s fixed settings), checked."""
        fixed = self.entries()[entry or self.name]
        clash = sorted(k for k in fixed if k in values and values[k] != fixed[k])
        if clash:
            raise RelucutError(f"{entry} fixes {', '.join(clash)}; drop {'it' if len(clash) == 1 else 'them'}")
        try:
            config = self.config(**{**values, **fixed})
        except TypeError as exc:
            raise RelucutError(f"bad {self.name} settings: {exc}") from None
        return config


def register_method(config: type[MethodConfig], *, summary: str | None = None,
                    variants: dict[str, dict[str, Any]] | None = None, frontier: Callable[..., Any] | None = None,
                    order: int = 100, needs_budget: bool = True, parallel_jobs: bool = False, command: bool = True,
                    cli_options: tuple = (), cli_extra: Callable[..., Any] | None = None,
                    cli_report: Callable[..., Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the decorated run function as the method ``config.method`` (see ``Method``)."""
    if not (dataclasses.is_dataclass(config) and issubclass(config, MethodConfig) and config.method):
        raise TypeError(f"{config.__name__} must be a MethodConfig dataclass with a method name")
    if "budget" not in {f.name for f in dataclasses.fields(config)}:
        raise TypeError(f"{config.__name__} needs a budget field")
    missing = [f.name for f in dataclasses.fields(config) if f.metadata.get("cli", True) and not f.metadata.get("help")]
    if missing:
        raise TypeError(f"{config.__name__} fields without help: {', '.join(missing)} (declare them with setting())")

    def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
        name = config.method
        taken = {e for m in _METHODS.values() if m.name != name for e in m.entries()}
        clash = {name, *(variants or {})} & taken
        if clash:
            raise TypeError(f"method name(s) {', '.join(sorted(clash))} already registered")
        doc = (summary or (run.__doc__ or config.__doc__ or name)).strip().splitlines()[0]
        _METHODS[name] = Method(name, config, run, doc, dict(variants or {}), frontier, order, needs_budget,
                                parallel_jobs, command, tuple(cli_options), cli_extra, cli_report)
        return run

    return decorate


def _load() -> None:
    """Imports every method module of the package once (each registers itself)."""
    global _LOADED
    if _LOADED:
        return
    import relucut.methods as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def methods() -> list[Method]:
    """Every registered method, in frontier order."""
    _load()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def list_methods() -> list[str]:
    return [m.name for m in methods()]


def frontier_entries() -> list[str]:
    """Every name ``--methods`` takes: each method and its variants, in frontier order."""
    return [entry for m in methods() for entry in m.entries()]


def get_method(name: str) -> Method:
    """The method registered as ``name`` (or owning the variant ``name``)."""
    _load()
    for m in _METHODS.values():
        if name in m.entries():
            return m
    raise RelucutError(f"unknown method '{name}'; use one of {', '.join(frontier_entries())}")


def method_of(config: Any) -> Method:
    """The registration of a config object (``relucut.reduce`` dispatches on it)."""
    _load()
    for m in _METHODS.values():
        if type(config) is m.config:
            return m
    names = ", ".join(m.config.__name__ for m in methods())
    raise RelucutError(f"relucut.reduce takes one of {names}, got {type(config).__name__}")


__all__ = ["Method", "frontier_entries", "get_method", "list_methods", "method_of", "methods", "register_method"]
