"""FrontierConfig: what a cross-method frontier search computes, round-tripping through JSON.

The methods come from the registry (``relucut.methods``): ``methods`` names frontier entries (a
method or one of its variants, e.g. ``snl-channel``), and ``settings`` may give a method's template
config (its budget is set per frontier budget). A method without one gets its frontier default,
computed here once from the base recipe (``resolve``), so ``relucut frontier`` and
``relucut.frontier`` with the same values train the same networks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from relucut.errors import RelucutError, refuse_unknown_fields
from relucut.methods import MethodConfig, frontier_entries, get_method, methods

OBJECTIVES = ("relus", "latency")
EXECUTORS = ("sequential", "ray")
# fields of a version-1 frontier config that are method settings now: (method, field)
_LEGACY = {"criticality_epochs": ("deepreduce", "criticality_epochs"), "one_block": ("deepreduce", "one_block"),
           "init": ("deepreduce", "init"), "equalized": ("deepreshape", "equalized")}


@dataclass
class FrontierConfig:
    """A frontier over ``methods`` at ReLU ``budgets`` (or ``latency_budgets`` in seconds, which
    then replace them), priced under ``engine`` (a ``relucut.pi`` profile name).

    ``search_epochs`` / ``finetune_epochs``: the lengths of the masked methods' two phases (SNL's
    search and fine-tuning, SENet's mask learning and fine-tuning); None: a quarter of the base
    recipe's epochs (at least 1) and the base recipe's epochs. DeepReDuce's candidates and
    DeepReShape's designs train with the base recipe itself."""

    budgets: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=frontier_entries)
    latency_budgets: list[float] | None = None
    objective: str = "relus"  # what "cost" means for the frontier and the budgets: ReLUs or latency
    engine: str = "delphi"
    bandwidth_bps: float | None = None  # None: the engine profile's own
    rtt_s: float | None = None
    threads: int | None = None  # threads of the 2PC engine
    search_epochs: int | None = None
    finetune_epochs: int | None = None
    settings: dict[str, MethodConfig] = field(default_factory=dict)  # method name -> template config
    executor: str = "sequential"  # DeepReDuce candidates and DeepReShape designs: in turn, or over Ray
    cpus_per_job: int = 1  # Ray: CPUs (and torch threads) per training job
    gpus_per_job: float | None = None  # Ray: GPU share per job (0.25: four per GPU); None: one each if any
    measure: bool = False  # run the final frontier's networks under SPU (slow)

    def __post_init__(self) -> None:
        self.settings = {name: _template(name, value) for name, value in dict(self.settings).items()}

    def check(self) -> None:
        from relucut.pi.profiles import profile_names

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RelucutError(message)

        entries = frontier_entries()
        need(bool(self.methods), f"no methods given; pick from {', '.join(entries)}")
        unknown = [m for m in self.methods if m not in entries]
        need(not unknown, f"unknown method(s) {', '.join(unknown)}; pick from {', '.join(entries)}")
        need(len(set(self.methods)) == len(self.methods), "a method is listed twice in --methods; list each once")
        if self.latency_budgets is not None:
            need(bool(self.latency_budgets), "the latency budget list is empty; give e.g. --latency-budget 1.5s")
            need(all(b > 0 for b in self.latency_budgets), "latency budgets must be > 0 seconds")
        else:
            need(bool(self.budgets), "the budget list is empty; give e.g. --budget 12k,25k,50k")
            need(all(isinstance(b, int) and b >= 1 for b in self.budgets), "ReLU budgets must be whole numbers >= 1")
        need(self.objective in OBJECTIVES, f"unknown objective '{self.objective}'; use {' or '.join(OBJECTIVES)}")
        need(self.engine in profile_names(), f"unknown engine '{self.engine}'; use one of {', '.join(profile_names())}")
        need(self.executor in EXECUTORS, f"unknown executor '{self.executor}'; use {' or '.join(EXECUTORS)}")
        need(self.cpus_per_job >= 1, f"cpus_per_job must be >= 1, got {self.cpus_per_job}")
        need(self.gpus_per_job is None or 0 < self.gpus_per_job <= 1,
             f"gpus_per_job must be in (0, 1], got {self.gpus_per_job}")
        need(self.threads is None or self.threads >= 1, f"the 2PC engine's threads must be >= 1, got {self.threads}")
        for name, value in (("search_epochs", self.search_epochs), ("finetune_epochs", self.finetune_epochs)):
            need(value is None or value >= (1 if name == "search_epochs" else 0), f"{name} must be >= 1, got {value}")
        for template in self.settings.values():
            template.check()

    @property
    def cost_key(self) -> str:
        """The point field that budgets and the frontier are taken on."""
        return "online_s" if self.objective == "latency" or self.latency_budgets is not None else "relus"

    def budget_list(self) -> list[float]:
        return sorted(self.latency_budgets if self.latency_budgets is not None else self.budgets)

    def resolve(self, base_epochs: int) -> FrontierConfig:
        """A copy whose every method has its template: the given one, or the method's frontier
        default for these lengths (``for_frontier`` of its config class, where it has one)."""
        search = self.search_epochs if self.search_epochs is not None else max(1, base_epochs // 4)
        finetune = self.finetune_epochs if self.finetune_epochs is not None else base_epochs
        settings = {}
        for method in methods():
            given = self.settings.get(method.name)
            if given is None:
                default = getattr(method.config, "for_frontier", None)
                given = default(search, finetune) if default is not None else method.config()
            settings[method.name] = given
        return dataclasses.replace(self, search_epochs=search, finetune_epochs=finetune, settings=settings)

    def methods_in_order(self) -> list[str]:
        """The chosen entries in registry order (coarse and cheap methods first)."""
        order = frontier_entries()
        return sorted(self.methods, key=order.index)

    def template(self, entry: str) -> MethodConfig:
        """The config a frontier entry runs with (its variant's settings fixed), budget unset."""
        method = get_method(entry)
        base = self.settings.get(method.name) or method.config()
        return dataclasses.replace(base, budget=None, **method.entries()[entry])

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        data["settings"] = {name: cfg.to_dict() for name, cfg in self.settings.items()}
        return json.loads(json.dumps(data, allow_nan=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierConfig:
        values = dict(data)
        settings = dict(values.pop("settings", None) or {})
        for key in ("snl", "senet"):  # version 1 kept these two templates as fields
            if isinstance(values.get(key), dict):
                settings[key] = {k: v for k, v in values.pop(key).items() if k != "budget"}
        for key, (method, name) in _LEGACY.items():
            if key in values:
                settings.setdefault(method, {})[name] = values.pop(key)
        refuse_unknown_fields(cls, values, "frontier config")
        return cls(**values, settings=settings)


def _template(name: str, value: Any) -> MethodConfig:
    method = get_method(name)
    if name != method.name:
        raise RelucutError(f"settings are per method: give {method.name}'s settings, not {name}'s")
    if isinstance(value, dict):
        return method.config.from_dict(value)
    if not isinstance(value, method.config):
        raise RelucutError(f"the settings of {name} must be a {method.config.__name__}, got {type(value).__name__}")
    return value


__all__ = ["EXECUTORS", "OBJECTIVES", "FrontierConfig"]
