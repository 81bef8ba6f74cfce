"""ReLU plans: per site, keep, drop, or mask; per max-pool site, keep or swap for average pooling.
Serializable, and applied in place or as a copy.

A dropped or masked site may say what its positions without a ReLU compute: by default they pass
x through (identity); with ``poly`` (3 x C: c0, c1, c2 per channel) they compute
c2*x^2 + c1*x + c0 (polynomial linearization). The coefficients belong to the plan like masks do:
a plan fixes every non-linearity of the network, training fixes the weights around it.

Format versions: 1 (keep/drop/mask), 2 (adds 'avgpool') and 3 (adds 'poly'). A plan is written in
the lowest version that holds it, so plans without pool swaps or polynomials stay readable by
older relucut.

``meta["model"]`` (a ModelSpec dict, written by ``relucut plan``) records the model a plan was made
for; :func:`check_made_for` refuses applying it to another model (another name or model options).
"""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.rundir import atomic_write_text  # re-exported: callers import it from here
from relucut.site_module import (
    ReLU6Site,
    ReLUSite,
    avgpool_like,
    check_poly,
    is_pool_site_module,
    is_site_module,
)
from relucut.sites import Site, SiteMap, is_site_node, site_modules, sitify, trace

PLAN_FORMAT = "relucut.plan"
PLAN_VERSION = 3  # the newest version written; every version up to it is read
ACTIONS = ("keep", "drop", "mask", "avgpool")
POOL_ACTIONS = ("keep", "avgpool")
RELU_ACTIONS = ("keep", "drop", "mask")


THIN_STYLES = ("post_add", "inner")  # which ReLU layer of a block thinning drops (ReLUPlan.deepreduce)


def thinned_sites(members: list[Site], style: str = "post_add") -> list[Site]:
    """The sites of one stage (in network order) that thinning in ``style`` drops."""
    blocks: dict[str, list[Site]] = {}
    for site in members:
        blocks.setdefault(site.block, []).append(site)
    if style == "post_add" and all(len(b) >= 2 for b in blocks.values()):
        return [b[-1] for b in blocks.values()]
    return [site for i, site in enumerate(members) if (len(members) - 1 - i) % 2 == 1]


@dataclass
class SiteDecision:
    action: str  # keep | drop | mask
    mask: torch.Tensor | None = None  # bool, (C,1,1) per channel or (C,H,W) per pixel
    poly: torch.Tensor | None = None  # (3, C) c0, c1, c2: what positions without a ReLU compute (None: x)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise RelucutError(f"unknown site action '{self.action}'; use one of {', '.join(ACTIONS)}")
        if (self.action == "mask") != (self.mask is not None):
            raise RelucutError("a site decision has a mask exactly when its action is 'mask'")
        if self.mask is not None:
            self.mask = self.mask.detach().to("cpu", torch.bool)
        if self.poly is not None:
            if self.action not in ("drop", "mask"):
                raise RelucutError(f"a '{self.action}' site has no polynomial: only dropped or masked "
                                   "positions compute one")
            try:
                self.poly = check_poly(self.poly)
            except ValueError as exc:
                raise RelucutError(str(exc)) from None

    def active(self, shape: tuple[int, ...]) -> int:
        """Active elements of a ReLU-like site; for a pool site 1 (kept) or 0 (swapped)."""
        if self.action == "keep":
            return math.prod(shape)
        if self.action in ("drop", "avgpool"):
            return 0
        return int(torch.broadcast_to(self.mask, tuple(shape)).sum())

    def poly_elements(self, shape: tuple[int, ...]) -> int:
        """Positions of a ReLU-like site computing the polynomial (0 without one)."""
        return 0 if self.poly is None else math.prod(shape) - self.active(shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SiteDecision) or self.action != other.action:
            return False
        return _same(self.mask, other.mask) and _same(self.poly, other.poly)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(torch.equal(a, b))


POLY_ROWS = ("c0", "c1", "c2")


def _encode_poly(poly: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel coefficients as JSON numbers (float32 values print and read back exactly)."""
    return {row: [float(v) for v in poly[i].tolist()] for i, row in enumerate(POLY_ROWS)}


def _decode_poly(data: Any) -> torch.Tensor:
    if not isinstance(data, dict) or set(data) != set(POLY_ROWS):
        raise ValueError('"poly" must hold the lists c0, c1 and c2 (one number per channel)')
    rows = [data[row] for row in POLY_ROWS]
    if not all(isinstance(r, list) and r and all(isinstance(v, (int, float)) for v in r) for r in rows) or \
            len({len(r) for r in rows}) != 1:
        raise ValueError('"poly" rows c0, c1, c2 must be lists of numbers of one length (the channels)')
    return torch.tensor(rows, dtype=torch.float32)


def _encode_mask(mask: torch.Tensor) -> dict[str, Any]:
    bits = np.packbits(mask.numpy().astype(np.uint8).ravel())
    return {"shape": list(mask.shape), "ones": int(mask.sum()), "bits": base64.b64encode(bits.tobytes()).decode()}


def _decode_mask(data: dict[str, Any]) -> torch.Tensor:
    shape = tuple(int(s) for s in data["shape"])
    bits = np.frombuffer(base64.b64decode(data["bits"]), dtype=np.uint8)
    flat = np.unpackbits(bits)[: math.prod(shape)]
    if flat.size != math.prod(shape):
        raise ValueError("mask bits are shorter than its shape")
    mask = torch.from_numpy(flat.astype(bool).reshape(shape))
    if "ones" in data and int(mask.sum()) != int(data["ones"]):
        raise ValueError("mask bits do not match their recorded count of ones")
    return mask


@dataclass
class ReLUPlan:
    """What stays a ReLU, per site name. Sites not named are kept."""

    decisions: dict[str, SiteDecision] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------------------
    def keep(self, site: str) -> ReLUPlan:
        self.decisions[site] = SiteDecision("keep")
        return self

    def drop(self, site: str, poly: torch.Tensor | None = None) -> ReLUPlan:
        """No ReLU at ``site``: its positions pass x through, or compute ``poly`` (3 x C)."""
        self.decisions[site] = SiteDecision("drop", poly=poly)
        return self

    def set_mask(self, site: str, mask: torch.Tensor, poly: torch.Tensor | None = None) -> ReLUPlan:
        """ReLUs where ``mask`` is set; the other positions pass x through, or compute ``poly``."""
        self.decisions[site] = SiteDecision("mask", mask, poly)
        return self

    def avgpool(self, site: str) -> ReLUPlan:
        """Swaps the max-pool at ``site`` for average pooling of the same kernel, stride and padding."""
        self.decisions[site] = SiteDecision("avgpool")
        return self

    def replace_maxpools(self, sites: SiteMap) -> ReLUPlan:
        """DELPHI's edit: every max-pool site of the model becomes average pooling."""
        for pool in sites.pools:
            if pool.kind == "maxpool":
                self.avgpool(pool.name)
        return self

    def decision(self, site: str) -> SiteDecision:
        return self.decisions.get(site, SiteDecision("keep"))

    @classmethod
    def deepreduce(cls, sites: SiteMap, cull: Iterable[str] = (), thin: Iterable[str] = (),
                   thin_style: str = "post_add") -> ReLUPlan:
        """DeepReDuce's coarse edits: cull (drop every ReLU of a stage) and thin.

        Thinning halves a stage's ReLU layers, in one of ``THIN_STYLES``:

        * ``post_add`` (default, as the authors' model zoo thins): in each block of two or more ReLU
          layers, the block's last one goes (in a ResNet basic block, the ReLU after the residual
          add) and the inner one stays.
        * ``inner`` (relucut's earlier rule): every other ReLU layer of the stage counting back
          from its last, which stays (it feeds the next stage); in a basic block that is the ReLU
          between the two convs.

        A stage whose blocks hold one ReLU layer each thins the ``inner`` way in both styles. In a
        basic-block stage both drop the same number of ReLUs; the networks differ.
        """
        cull, thin = list(cull), list(thin)
        if thin_style not in THIN_STYLES:
            raise RelucutError(f"unknown thinning style '{thin_style}'; use {' or '.join(THIN_STYLES)}")
        sites.check_stages(cull, "--cull")
        sites.check_stages(thin, "--thin")
        both = sorted(set(cull) & set(thin))
        if both:
            raise RelucutError(f"stage(s) {', '.join(both)} are both culled and thinned; name each in one option")
        plan = cls(meta={"cull": cull, "thin": thin, **({"thin_style": thin_style} if thin else {})})
        for stage in cull:
            for site in sites.in_stage(stage):
                plan.drop(site.name)
        for stage in thin:
            for site in thinned_sites(sites.in_stage(stage), thin_style):
                plan.drop(site.name)
        return plan

    @classmethod
    def from_masks(cls, masks: dict[str, torch.Tensor], meta: dict[str, Any] | None = None,
                   polys: dict[str, torch.Tensor] | None = None) -> ReLUPlan:
        """A plan from binary masks per site: (C,H,W) per pixel or (C,1,1) per channel. An all-ones
        mask is a keep and an all-zeros mask a drop, so counting and export see what they are.
        ``polys``: per site, the (3, C) polynomial of its positions without a ReLU."""
        plan = cls(meta=dict(meta or {}))
        for name, mask in masks.items():
            mask = torch.as_tensor(mask).detach().to("cpu", torch.bool)
            poly = (polys or {}).get(name)
            if bool(mask.all()):
                plan.keep(name)
            elif not bool(mask.any()):
                plan.drop(name, poly)
            else:
                plan.set_mask(name, mask, poly)
        return plan

    @classmethod
    def from_model(cls, model: nn.Module) -> ReLUPlan:
        """The plan a model carries in its ``ReLUSite`` modules (e.g. after mask training)."""
        gm = trace(model)
        modules = dict(gm.named_modules())
        plan = cls()
        for node in gm.graph.nodes:
            module = modules.get(str(node.target)) if node.op == "call_module" else None
            if isinstance(module, ReLUSite) and is_site_node(node, modules):
                poly = module.coefficients()
                if module.mode == "identity":
                    plan.drop(node.name, poly)
                elif module.mode == "mask":
                    plan.set_mask(node.name, module.mask, poly)
            elif getattr(module, "relucut_pool_site", False):
                plan.avgpool(node.name)
        return plan

    # -- queries ----------------------------------------------------------------------------
    def active(self, site: Site) -> int:
        """ReLUs a ReLU-like site evaluates under the plan (pool sites: see ``comparisons``)."""
        return self.decision(site.name).active(site.shape)

    def comparisons(self, site: Site) -> int:
        """ReLU-equivalent comparisons ``site`` costs under the plan (ReLU6 two per element)."""
        decision = self.decision(site.name)
        if site.is_pool:
            return site.full_comparisons if decision.action == "keep" else 0
        return decision.active(site.shape) * site.full_comparisons // max(site.numel, 1)

    def count(self, sites: SiteMap) -> int:
        self.validate(sites)
        return sum(self.active(s) for s in sites)

    def poly_elements(self, site: Site) -> int:
        """Positions of ``site`` computing a polynomial under the plan."""
        return self.decision(site.name).poly_elements(site.shape)

    def validate(self, sites: SiteMap) -> None:
        """Every named site exists and every mask fits its site's shape."""
        for name, decision in self.decisions.items():
            site = sites[name]
            allowed = POOL_ACTIONS if site.is_pool else RELU_ACTIONS
            if decision.action not in allowed:
                what = "a max-pool site" if site.is_pool else f"a {site.kind} site"
                raise RelucutError(
                    f"site '{name}' is {what}; its plan action must be one of {', '.join(allowed)}, "
                    f"not '{decision.action}'"
                )
            if decision.mask is not None:
                try:
                    torch.broadcast_to(decision.mask, site.shape)
                    ok = decision.mask.dim() == len(site.shape)
                except RuntimeError:
                    ok = False
                if not ok:
                    raise RelucutError(
                        f"mask for site '{name}' has shape {tuple(decision.mask.shape)}, but the site "
                        f"outputs {site.shape}; use (C,H,W) per pixel or (C,1,1) per channel"
                    )
            if decision.poly is not None and decision.poly.shape[1] != site.shape[0]:
                raise RelucutError(f"the polynomial of site '{name}' has {decision.poly.shape[1]} channels, but "
                                   f"the site has {site.shape[0]}; give one c0, c1, c2 per channel")

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        sites = {}
        for name, d in self.decisions.items():
            sites[name] = {"action": d.action, **(_encode_mask(d.mask) if d.mask is not None else {}),
                           **({"poly": _encode_poly(d.poly)} if d.poly is not None else {})}
        version = 3 if any(d.poly is not None for d in self.decisions.values()) else \
            2 if any(d.action == "avgpool" for d in self.decisions.values()) else 1
        return {"format": PLAN_FORMAT, "version": version, "sites": sites, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Any) -> ReLUPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise RelucutError("not a relucut plan (missing \"format\": \"relucut.plan\"); make one with relucut")
        if data.get("version") not in range(1, PLAN_VERSION + 1):
            raise RelucutError(
                f"plan format version {data.get('version')} is not supported "
                f"(this relucut reads versions 1 to {PLAN_VERSION})"
            )
        entries = [e for e in dict(data.get("sites") or {}).values() if isinstance(e, dict)]
        if data["version"] == 1 and any(e.get("action") == "avgpool" for e in entries):
            raise RelucutError("corrupt plan: action 'avgpool' needs plan format version 2")
        if data["version"] < 3 and any("poly" in e for e in entries):
            raise RelucutError("corrupt plan: a site's 'poly' needs plan format version 3")
        plan = cls(meta=dict(data.get("meta") or {}))
        try:
            for name, entry in dict(data["sites"]).items():
                mask = _decode_mask(entry) if entry["action"] == "mask" else None
                poly = _decode_poly(entry["poly"]) if "poly" in entry else None
                plan.decisions[name] = SiteDecision(entry["action"], mask, poly)
        except RelucutError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RelucutError(f"corrupt plan: {exc.__class__.__name__}: {exc}") from None
        return plan

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReLUPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RelucutError(f"corrupt plan JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ReLUPlan:
        path = Path(path)
        if not path.is_file():
            raise RelucutError(f"plan file '{path}' does not exist")
        try:
            return cls.from_json(path.read_text())
        except RelucutError as exc:
            raise RelucutError(f"{path}: {exc}") from None
        except UnicodeDecodeError:
            raise RelucutError(f"{path}: corrupt plan (not UTF-8 text)") from None


def check_made_for(plan: ReLUPlan, spec, where: str = "the plan") -> None:
    """Refuses ``plan`` on ``spec`` (a ModelSpec) when its meta records another model: another name
    or other model options (a resnet18 plan names sites a resnet20 also has, meaning other layers)."""
    made = plan.meta.get("model")
    if not isinstance(made, dict) or "name" not in made:
        return  # plans from methods and older plans record no model
    theirs = {"name": made.get("name"), "kwargs": made.get("kwargs") or {}}
    mine = json.loads(json.dumps({"name": spec.name, "kwargs": spec.kwargs}))
    if json.loads(json.dumps(theirs)) != mine:
        def describe(m: dict) -> str:
            options = ", ".join(f"{k}={v}" for k, v in sorted(m["kwargs"].items()))
            return f"{m['name']}{f' ({options})' if options else ''}"

        raise RelucutError(f"{where} was made for {describe(theirs)}, not {describe(mine)}; make a plan for "
                           "this model with relucut plan (same model options)")


def build_plan(spec, plan_file: str | Path | None = None, cull: Iterable[str] = (),
               thin: Iterable[str] = (), thin_style: str = "post_add") -> ReLUPlan:
    """A plan for ``spec`` (a ModelSpec): loaded from ``plan_file``, then DeepReDuce edits on top."""
    from relucut.sites import find_sites

    plan = ReLUPlan.load(plan_file) if plan_file else ReLUPlan()
    check_made_for(plan, spec, f"plan '{plan_file}'")
    cull, thin = list(cull), list(thin)
    if cull or thin:
        edits = ReLUPlan.deepreduce(find_sites(spec.build(), spec.input_size), cull=cull, thin=thin,
                                    thin_style=thin_style)
        plan.decisions.update(edits.decisions)
        plan.meta.update(edits.meta)
    return plan


def _site_module(decision: SiteDecision, old: nn.Module) -> nn.Module:
    """The module a decision puts at a site whose module is now ``old``."""
    if decision.action == "avgpool":
        return old if getattr(old, "relucut_pool_site", False) else avgpool_like(old)
    if is_pool_site_module(old):  # keep: a pool stays a max-pool
        return old
    relu6 = isinstance(old, (nn.ReLU6, ReLU6Site))
    if decision.action == "drop":
        return ReLUSite("identity", poly=decision.poly)  # identity (or the polynomial), whatever it replaced
    mask = decision.mask if decision.action == "mask" else None
    mode = "mask" if mask is not None else "relu"
    return ReLU6Site(mode, mask, decision.poly) if relu6 else ReLUSite(mode, mask, decision.poly)


def _swappable(model: nn.Module) -> dict[str, str | None]:
    """Site name -> module path, or None where a module swap cannot address the site
    (a functional call, or a module called more than once)."""
    return site_modules(trace(model))


def apply_plan_(model: nn.Module, plan: ReLUPlan, input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Applies ``plan`` in place by swapping site modules (ReLU, ReLU6, max-pool) for plan modules.

    Works where each planned site is a module called once (every zoo model). For functional
    calls or a module called twice use :func:`apply_plan`, which returns an fx copy.
    With ``input_size`` the plan is first checked against the model's sites and shapes.
    """
    if input_size is not None:
        from relucut.sites import find_sites

        plan.validate(find_sites(model, input_size))
    swappable = _swappable(model)
    unknown = [name for name in plan.decisions if name not in swappable]
    if unknown:
        raise RelucutError(
            f"the model has no ReLU site '{unknown[0]}'; 'relucut count MODEL --json' lists the site names"
        )
    missing = [name for name in plan.decisions if swappable[name] is None]
    if missing:
        raise RelucutError(
            f"site(s) {', '.join(missing[:5])} cannot be changed in place (a functional call or a module "
            "called more than once); use relucut.apply_plan(model, plan), which returns an fx copy"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, decision in plan.decisions.items():
        path = swappable[name]
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, attr)
        pool = is_pool_site_module(old)
        if not (is_site_module(old) or isinstance(old, nn.ReLU6) or pool):
            raise RelucutError(f"site '{name}' at {path} is not a ReLU module")
        if decision.action not in (POOL_ACTIONS if pool else RELU_ACTIONS):
            raise RelucutError(f"site '{name}' at {path} cannot take plan action '{decision.action}'")
        setattr(parent, attr, _site_module(decision, old).to(device))
    return model


def apply_plan(model: nn.Module, plan: ReLUPlan, input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Returns a copy of ``model`` with ``plan`` applied.

    A model where a module swap cannot reach every site (a functional ReLU or max-pool, a module
    called twice) is sitified first (an fx GraphModule), whichever sites the plan names: the form
    depends on the architecture alone, as for the methods' learnable masks
    (:func:`relucut.sites.addressable`), so a trained state_dict loads wherever the plan is applied.
    """
    if not plan.decisions:  # nothing changes: the model's own form
        return apply_plan_(copy.deepcopy(model), plan, input_size)
    if all(_swappable(model).values()):  # the rule of relucut.sites.addressable, on one trace
        return apply_plan_(copy.deepcopy(model), plan, input_size)
    return apply_plan_(sitify(model), plan, input_size)
