"""FrontierConfig: what a cross-method frontier search computes, round-tripping through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from relucut.errors import RelucutError, refuse_unknown_fields
from relucut.finegrained.senet import SENetConfig
from relucut.finegrained.snl import SNLConfig

# every method the frontier can run, in the order they run (coarse and cheap first)
METHODS = ("deepreduce", "deepreshape", "snl", "snl-channel", "senet", "senet-shallow")
OBJECTIVES = ("relus", "latency")
EXECUTORS = ("sequential", "ray")
INITS = ("scratch", "teacher")


@dataclass
class FrontierConfig:
    """A frontier over ``methods`` at ReLU ``budgets`` (or ``latency_budgets`` in seconds, which
    then replace them), priced under ``engine`` (a ``relucut.pi`` profile name).

    ``snl`` and ``senet`` are the method templates; their ``budget`` is set per frontier budget.
    DeepReDuce candidates and DeepReShape designs train with the base ``TrainConfig``'s recipe."""

    budgets: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    latency_budgets: list[float] | None = None
    objective: str = "relus"  # what "cost" means for the frontier and the budgets: ReLUs or latency
    engine: str = "delphi"
    bandwidth_bps: float | None = None  # None: the engine profile's own
    rtt_s: float | None = None
    threads: int | None = None
    snl: SNLConfig = field(default_factory=lambda: SNLConfig(budget=0))
    senet: SENetConfig = field(default_factory=lambda: SENetConfig(budget=0))
    criticality_epochs: int | None = None  # None: the base recipe's epochs
    one_block: bool = True  # DeepReDuce's S* candidates
    init: str = "scratch"  # DeepReDuce's networks: fresh weights, or the teacher's (every weight of the same shape)
    executor: str = "sequential"  # DeepReDuce candidates and DeepReShape designs: in turn, or over Ray
    cpus_per_job: int = 1  # Ray: CPUs (and torch threads) per training job
    gpus_per_job: float | None = None  # Ray: GPU share per job (0.25: four per GPU); None: one each if any
    measure: bool = False  # run the final frontier's networks under SPU (slow)
    equalized: str = "hrn_5x5x3x"  # DeepReShape's ReLU-equalized HybReNet (slides: CIFAR-100 order)

    def check(self) -> None:
        from relucut.pi.profiles import profile_names

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RelucutError(message)

        need(bool(self.methods), f"no methods given; pick from {', '.join(METHODS)}")
        unknown = [m for m in self.methods if m not in METHODS]
        need(not unknown, f"unknown method(s) {', '.join(unknown)}; pick from {', '.join(METHODS)}")
        need(len(set(self.methods)) == len(self.methods), "a method is listed twice in --methods; list each once")
        if self.latency_budgets is not None:
            need(bool(self.latency_budgets), "the latency budget list is empty; give e.g. --latency-budget 1.5s")
            need(all(b > 0 for b in self.latency_budgets), "latency budgets must be > 0 seconds")
        else:
            need(bool(self.budgets), "the budget list is empty; give e.g. --budgets 12k,25k,50k")
            need(all(isinstance(b, int) and b >= 1 for b in self.budgets), "ReLU budgets must be whole numbers >= 1")
        need(self.objective in OBJECTIVES, f"unknown objective '{self.objective}'; use {' or '.join(OBJECTIVES)}")
        need(self.engine in profile_names(), f"unknown engine '{self.engine}'; use one of {', '.join(profile_names())}")
        need(self.init in INITS, f"unknown init '{self.init}'; use {' or '.join(INITS)}")
        need(self.executor in EXECUTORS, f"unknown executor '{self.executor}'; use {' or '.join(EXECUTORS)}")
        need(self.cpus_per_job >= 1, f"cpus_per_job must be >= 1, got {self.cpus_per_job}")
        need(self.gpus_per_job is None or 0 < self.gpus_per_job <= 1,
             f"gpus_per_job must be in (0, 1], got {self.gpus_per_job}")
        need(self.criticality_epochs is None or self.criticality_epochs >= 1, "criticality epochs must be >= 1")
        self.snl.check()
        self.senet.check()

    @property
    def cost_key(self) -> str:
        """The point field that budgets and the frontier are taken on."""
        return "online_s" if self.objective == "latency" or self.latency_budgets is not None else "relus"

    def budget_list(self) -> list[float]:
        return sorted(self.latency_budgets if self.latency_budgets is not None else self.budgets)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierConfig:
        refuse_unknown_fields(cls, data, "frontier config")
        values = dict(data)
        if isinstance(values.get("snl"), dict):
            values["snl"] = SNLConfig(**values["snl"])
        if isinstance(values.get("senet"), dict):
            values["senet"] = SENetConfig(**values["senet"])
        return cls(**values)
