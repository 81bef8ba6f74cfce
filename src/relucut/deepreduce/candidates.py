"""DeepReDuce candidate generation (paper §3.5): a pure function of the criticality order.

Culling goes from the least to the most critical stage, compounding, and never culls the most
critical one. Each iteration yields five networks: culled; culled + thinned (every remaining
stage thinned); and the thinned network reshaped by alpha=0.5, rho=0.5, and both. Optionally an
S* network (one block in each ReLU stage, thinned, alpha and rho) per iteration reaches the
lowest budgets, as in Tables 4 and 5. The stem ReLU is always culled.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from relucut.cost import CostReport, count
from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.models.resnet import RHO_MODES, integer_stride
from relucut.plan import ReLUPlan
from relucut.sites import SiteMap, find_sites

STEM = "stem"
REDUCED_ALPHA = 0.5
REDUCED_RHO = 0.5
STEP_NAMES = ("culled", "thinned", "alpha", "rho", "alpha+rho", "one-block")


@dataclass(frozen=True)
class Candidate:
    """One DeepReDuce network: which stages are culled/thinned, and how it is reshaped."""

    iteration: int  # 1 = the least critical stage culled
    step: str  # one of STEP_NAMES
    culled: tuple[str, ...]  # in model stage order, stem included when the model has one
    thinned: tuple[str, ...]
    alpha: float = 1.0
    rho: float = 1.0
    blocks: tuple[int, ...] | None = None  # per non-stem stage; set by the S* (one-block) step
    thin_style: str = "post_add"  # which ReLU of a block thinning drops (relucut.plan.THIN_STYLES)
    rho_mode: str = "stride"  # how rho < 1 lowers the resolution: a strided stem conv (the zoo) or "pool"

    @property
    def name(self) -> str:
        """A stable, file-system safe id, e.g. ``cull-s1+s4_thin-s2+s3_alpha0.5``."""
        shown = [s for s in self.culled if s != STEM]
        parts = [f"cull-{'+'.join(shown) or 'none'}"]
        if self.thinned:
            parts.append(f"thin-{'+'.join(self.thinned)}")
        if self.alpha != 1.0:
            parts.append(f"alpha{self.alpha:g}")
        if self.rho != 1.0:
            parts.append(f"rho{self.rho:g}")
        if self.blocks is not None:
            parts.append("one-block")
        if self.thinned and self.thin_style != "post_add":
            parts.append(f"{self.thin_style}-thin")
        if self.rho != 1.0 and self.rho_mode != "stride":
            parts.append(f"{self.rho_mode}-rho")
        return "_".join(parts)

    def spec(self, base: ModelSpec) -> ModelSpec:
        """The base model reshaped by this candidate's alpha, rho and blocks."""
        kwargs = dict(base.kwargs)
        if self.alpha != 1.0:
            kwargs["alpha"] = float(kwargs.get("alpha", 1.0)) * self.alpha
        if self.rho != 1.0:
            kwargs["rho"] = float(kwargs.get("rho", 1.0)) * self.rho
            # a strided stem needs an integer stride (1/rho); pooling takes any rho
            if self.rho_mode == "stride" and integer_stride(kwargs["rho"]) is not None:
                kwargs["rho_mode"] = "stride"
            elif "rho_mode" in kwargs:
                kwargs["rho_mode"] = "pool"
        if self.blocks is not None:
            kwargs["blocks"] = list(self.blocks)
        return ModelSpec(base.name, base.num_classes, base.in_chans, base.image_size, kwargs)

    def plan_for(self, sites: SiteMap) -> ReLUPlan:
        plan = ReLUPlan.deepreduce(sites, cull=self.culled, thin=self.thinned, thin_style=self.thin_style)
        plan.meta.update({"deepreduce": self.name})
        return plan

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        fields = {k: v for k, v in data.items() if k != "name"}
        for key in ("culled", "thinned"):
            fields[key] = tuple(fields[key])
        if fields.get("blocks") is not None:
            fields["blocks"] = tuple(fields["blocks"])
        return cls(**fields)

    def label(self) -> str:
        """Human form in the paper's notation: ``S2+S3, a=0.5``."""
        stages = [s.upper() + ("*" if self.blocks is not None else "") for s in self.thinned]
        return ", ".join(p for p in (
            "cull " + ("+".join(s.upper() for s in self.culled if s != STEM) or "-"),
            ("thin " + "+".join(stages)) if stages else "",
            f"a={self.alpha:g}" if self.alpha != 1.0 else "",
            f"r={self.rho:g}" if self.rho != 1.0 else "",
        ) if p)


def generate_candidates(
    order: Sequence[str],
    stage_names: Sequence[str],
    stage_blocks: Mapping[str, int] | None = None,
    one_block: bool = False,
    thin_style: str = "post_add",
    rho_mode: str = "stride",
) -> list[Candidate]:
    """DeepReDuce's candidate list; thinned ones drop the ReLU ``thin_style`` names, rho ones lower
    the resolution by ``rho_mode``.

    ``order`` lists the non-stem stages from least to most critical. ``stage_names`` gives the
    model's stage order (a ``stem`` among them is always culled). ``stage_blocks`` (blocks per
    non-stem stage, in model order) is needed for the one-block (S*) variants.
    """
    if rho_mode not in RHO_MODES:
        raise RelucutError(f"unknown rho_mode '{rho_mode}'; use {' or '.join(RHO_MODES)}")
    stages = [s for s in stage_names if s != STEM]
    order = list(order)
    if sorted(order) != sorted(stages):
        raise RelucutError(
            f"the criticality order {', '.join(order)} does not name this model's stages "
            f"{', '.join(stages)} exactly once each; recompute it for this model"
        )
    if len(stages) < 2:
        raise RelucutError("DeepReDuce needs a model with at least two non-stem stages to cull")
    stem = (STEM,) if STEM in stage_names else ()
    if one_block and stage_blocks is None:
        raise RelucutError("one-block (S*) variants need the number of blocks per stage")
    in_model_order = {s: i for i, s in enumerate(stages)}
    out: list[Candidate] = []
    for iteration in range(1, len(order)):  # never cull the most critical stage
        culled_set = set(order[:iteration])
        culled = stem + tuple(sorted(culled_set, key=in_model_order.get))
        remaining = tuple(s for s in stages if s not in culled_set)
        out += [
            Candidate(iteration, "culled", culled, ()),
            Candidate(iteration, "thinned", culled, remaining),
            Candidate(iteration, "alpha", culled, remaining, alpha=REDUCED_ALPHA),
            Candidate(iteration, "rho", culled, remaining, rho=REDUCED_RHO),
            Candidate(iteration, "alpha+rho", culled, remaining, alpha=REDUCED_ALPHA, rho=REDUCED_RHO),
        ]
        if one_block:
            blocks = tuple(1 if s in remaining else int(stage_blocks[s]) for s in stages)
            if any(int(stage_blocks[s]) > 1 for s in remaining):
                out.append(Candidate(iteration, "one-block", culled, remaining, REDUCED_ALPHA, REDUCED_RHO, blocks))
    return [dataclasses.replace(c, thin_style=thin_style, rho_mode=rho_mode) for c in out]


def stage_blocks_of(sites: SiteMap) -> dict[str, int]:
    """Blocks per non-stem stage, as the sites' block addresses show them."""
    out: dict[str, int] = {}
    for stage in sites.stage_names:
        if stage != STEM:
            out[stage] = len({s.block for s in sites.in_stage(stage)})
    return out


@dataclass
class CandidateCost:
    candidate: Candidate
    spec: ModelSpec
    plan: ReLUPlan
    report: CostReport = field(repr=False)

    @property
    def relus(self) -> int:
        return self.report.relus


def _build(candidate: Candidate, base: ModelSpec):
    spec = candidate.spec(base)
    try:
        model = spec.build()
    except RelucutError as exc:
        raise RelucutError(f"candidate {candidate.name}: {exc}") from None
    return spec, model


def relu_counts(candidates: Sequence[Candidate], base: ModelSpec,
                cache: dict[str, SiteMap] | None = None) -> dict[str, int]:
    """ReLUs per input of each candidate, by name; no MAC counting, and one trace per distinct
    model shape (kept in ``cache`` across calls), so it is cheap enough for budget checks."""
    cache = {} if cache is None else cache
    out = {}
    for cand in candidates:
        _, sites = _sites_of(cand, base, cache)
        out[cand.name] = cand.plan_for(sites).count(sites)
    return out


def _sites_of(cand: Candidate, base: ModelSpec, cache: dict[str, SiteMap]) -> tuple[str, SiteMap]:
    """The candidate's model shape (as a key) and its sites, traced once per shape into ``cache``."""
    spec = cand.spec(base)
    shape_key = repr(sorted(spec.kwargs.items()))
    if shape_key not in cache:
        _, model = _build(cand, base)
        cache[shape_key] = find_sites(model, spec.input_size)
    return shape_key, cache[shape_key]


def drop_identical(candidates: Sequence[Candidate], base: ModelSpec,
                   cache: dict[str, SiteMap] | None = None) -> list[Candidate]:
    """The candidates without networks equal to an earlier one (same shape, same ReLUs dropped),
    so none is trained twice: thinning a stage of one ReLU layer drops nothing (every "thinned"
    candidate of a ResNet6 is its culled parent). The first of equals is kept; order is kept."""
    cache = {} if cache is None else cache
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    out = []
    for cand in candidates:
        shape_key, sites = _sites_of(cand, base, cache)
        plan = cand.plan_for(sites)
        changed = tuple(sorted((name, d.action) for name, d in plan.decisions.items() if d.action != "keep"))
        if (shape_key, changed) not in seen:
            seen.add((shape_key, changed))
            out.append(cand)
    return out


def cost_candidate(candidate: Candidate, base: ModelSpec) -> CandidateCost:
    """Builds the candidate's model, its plan, and counts what it costs (no training)."""
    spec, model = _build(candidate, base)
    sites = find_sites(model, spec.input_size)
    plan = candidate.plan_for(sites)
    return CandidateCost(candidate, spec, plan, count(model, spec.input_size, plan=plan))
