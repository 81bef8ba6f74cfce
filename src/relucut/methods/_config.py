"""``MethodConfig``: the base of every method's settings, one dataclass per method (torchao style).

A method's config is a dataclass that subclasses :class:`MethodConfig` and names its method::

    @dataclass
    class SNLConfig(MethodConfig):
        method = "snl"                     # the registered name (a class attribute, not a field)
        budget: int | None = setting(None, help="Global ReLU budget.")
        granularity: str = setting("pixel", help="pixel or channel masks.", choices=("pixel", "channel"))

Each field declared with :func:`setting` carries its help text (and choices), from which the
command-line options of ``relucut METHOD`` are derived; a field with ``cli=False`` (a per-site
allocation, say) is set from Python or JSON only. This module imports no torch: ``relucut --help``
builds every method's options from these classes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from relucut.errors import RelucutError, refuse_unknown_fields

_NO_DEFAULT = dataclasses.MISSING


def setting(default: Any = _NO_DEFAULT, *, help: str, factory: Any = _NO_DEFAULT, choices: Sequence[str] | None = None,
            cli: bool = True, flag: str | None = None, aliases: Sequence[str] = ()) -> Any:
    """A config field with its help text. ``choices``: the values allowed (checked, and listed in
    --help); ``flag``: the option's name when not ``--field-name``; ``aliases``: old option names
    still accepted (hidden, with a deprecation note); ``cli=False``: no command-line option."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "cli": cli, "flag": flag,
            "aliases": tuple(aliases)}
    if factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def need(ok: bool, message: str) -> None:
    """One check of ``MethodConfig.check``: a one-line RelucutError when ``ok`` is false."""
    if not ok:
        raise RelucutError(message)


class MethodConfig:
    """Settings of one method. Subclasses are dataclasses with a ``budget`` field (ReLUs; None where
    the method can run without one) and set ``method`` to their registered name."""

    method: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def check(self) -> None:
        """Raises a one-line RelucutError for a bad value; called before anything is written."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                flag = f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"
                raise RelucutError(f"unknown {f.name} '{value}' ({flag}) for {self.method}; use {' or '.join(choices)}")

    def with_budget(self, budget: int | None) -> MethodConfig:
        return dataclasses.replace(self, budget=budget)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON data (what run folders record and compare)."""
        return json.loads(json.dumps(dataclasses.asdict(self), allow_nan=False))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        """The config from ``to_dict``'s form (a ``method``/``version`` key, as ``record`` adds, is
        checked and dropped). Unknown fields are refused, never ignored."""
        if not isinstance(data, dict):
            raise RelucutError(f"a {cls.method} config must be a JSON object, got {type(data).__name__}")
        values = dict(data)
        method = values.pop("method", cls.method)
        if method != cls.method:
            raise RelucutError(f"that config is for method '{method}', not '{cls.method}'")
        version = values.pop("version", cls.version)
        if not isinstance(version, int) or version > cls.version:
            raise RelucutError(f"that {cls.method} config is version {version}; this relucut reads up to "
                               f"{cls.version}: upgrade relucut")
        refuse_unknown_fields(cls, values, f"{cls.method} config")
        try:
            return cls(**values)
        except TypeError as exc:
            raise RelucutError(f"malformed {cls.method} config: {exc}") from None

    def record(self) -> dict[str, Any]:
        """``to_dict`` with the method's name and config version: a self-describing JSON object."""
        return {"method": self.method, "version": self.version, **self.to_dict()}


def help_of(config_cls: type, name: str) -> str:
    """The help text of a config field (the empty string when it has none)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


__all__ = ["MethodConfig", "help_of", "need", "setting"]
