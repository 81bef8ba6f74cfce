"""ReLU plans: per site, keep, drop, or mask. Serializable, and applied in place or as a copy."""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.site_module import ReLUSite, is_site_module
from relucut.sites import Site, SiteMap, is_site_node, sitify, trace

PLAN_FORMAT = "relucut.plan"
PLAN_VERSION = 1
ACTIONS = ("keep", "drop", "mask")


@dataclass
class SiteDecision:
    action: str  # keep | drop | mask
    mask: torch.Tensor | None = None  # bool, (C,1,1) per channel or (C,H,W) per pixel

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise RelucutError(f"unknown site action '{self.action}'; use one of {', '.join(ACTIONS)}")
        if (self.action == "mask") != (self.mask is not None):
            raise RelucutError("a site decision has a mask exactly when its action is 'mask'")
        if self.mask is not None:
            self.mask = self.mask.detach().to("cpu", torch.bool)

    def active(self, shape: tuple[int, ...]) -> int:
        if self.action == "keep":
            return math.prod(shape)
        if self.action == "drop":
            return 0
        return int(torch.broadcast_to(self.mask, tuple(shape)).sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SiteDecision) or self.action != other.action:
            return False
        if self.mask is None or other.mask is None:
            return self.mask is other.mask
        return self.mask.shape == other.mask.shape and bool(torch.equal(self.mask, other.mask))


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

    def drop(self, site: str) -> ReLUPlan:
        self.decisions[site] = SiteDecision("drop")
        return self

    def set_mask(self, site: str, mask: torch.Tensor) -> ReLUPlan:
        self.decisions[site] = SiteDecision("mask", mask)
        return self

    def decision(self, site: str) -> SiteDecision:
        return self.decisions.get(site, SiteDecision("keep"))

    @classmethod
    def deepreduce(cls, sites: SiteMap, cull: Iterable[str] = (), thin: Iterable[str] = ()) -> ReLUPlan:
        """DeepReDuce's coarse edits: cull (drop every ReLU of a stage) and thin.

        Thinning drops every other ReLU layer of a stage counting back from its last one, which
        stays (it feeds the next stage): in a ResNet basic block that is the ReLU between the two
        convs, so the pair can later merge into one conv. It halves a stage whose layers are equal.
        """
        cull, thin = list(cull), list(thin)
        sites.check_stages(cull, "--cull")
        sites.check_stages(thin, "--thin")
        both = sorted(set(cull) & set(thin))
        if both:
            raise RelucutError(f"stage(s) {', '.join(both)} are both culled and thinned; name each in one option")
        plan = cls(meta={"cull": cull, "thin": thin})
        for stage in cull:
            for site in sites.in_stage(stage):
                plan.drop(site.name)
        for stage in thin:
            members = sites.in_stage(stage)
            for i, site in enumerate(members):
                if (len(members) - 1 - i) % 2 == 1:
                    plan.drop(site.name)
        return plan

    @classmethod
    def from_masks(cls, masks: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> ReLUPlan:
        """A plan from binary masks per site: (C,H,W) per pixel or (C,1,1) per channel. An all-ones
        mask is a keep and an all-zeros mask a drop, so counting and export see what they are."""
        plan = cls(meta=dict(meta or {}))
        for name, mask in masks.items():
            mask = torch.as_tensor(mask).detach().to("cpu", torch.bool)
            if bool(mask.all()):
                plan.keep(name)
            elif not bool(mask.any()):
                plan.drop(name)
            else:
                plan.set_mask(name, mask)
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
                if module.mode == "identity":
                    plan.drop(node.name)
                elif module.mode == "mask":
                    plan.set_mask(node.name, module.mask)
        return plan

    # -- queries ----------------------------------------------------------------------------
    def active(self, site: Site) -> int:
        return self.decision(site.name).active(site.shape)

    def count(self, sites: SiteMap) -> int:
        self.validate(sites)
        return sum(self.active(s) for s in sites)

    def validate(self, sites: SiteMap) -> None:
        """Every named site exists and every mask fits its site's shape."""
        for name, decision in self.decisions.items():
            site = sites[name]
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

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        sites = {}
        for name, d in self.decisions.items():
            sites[name] = {"action": d.action, **(_encode_mask(d.mask) if d.mask is not None else {})}
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "sites": sites, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Any) -> ReLUPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise RelucutError("not a relucut plan (missing \"format\": \"relucut.plan\"); make one with relucut")
        if data.get("version") != PLAN_VERSION:
            raise RelucutError(
                f"plan format version {data.get('version')} is not supported (this relucut reads {PLAN_VERSION})"
            )
        plan = cls(meta=dict(data.get("meta") or {}))
        try:
            for name, entry in dict(data["sites"]).items():
                mask = _decode_mask(entry) if entry["action"] == "mask" else None
                plan.decisions[name] = SiteDecision(entry["action"], mask)
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


def build_plan(spec, plan_file: str | Path | None = None, cull: Iterable[str] = (),
               thin: Iterable[str] = ()) -> ReLUPlan:
    """A plan for ``spec`` (a ModelSpec): loaded from ``plan_file``, then DeepReDuce edits on top."""
    from relucut.sites import find_sites

    plan = ReLUPlan.load(plan_file) if plan_file else ReLUPlan()
    cull, thin = list(cull), list(thin)
    if cull or thin:
        edits = ReLUPlan.deepreduce(find_sites(spec.build(), spec.input_size), cull=cull, thin=thin)
        plan.decisions.update(edits.decisions)
        plan.meta.update(edits.meta)
    return plan


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _site_module(decision: SiteDecision) -> ReLUSite:
    if decision.action == "keep":
        return ReLUSite("relu")
    if decision.action == "drop":
        return ReLUSite("identity")
    return ReLUSite("mask", decision.mask)


def _swappable(model: nn.Module) -> dict[str, str | None]:
    """Site name -> module path, or None where a module swap cannot address the site
    (a functional call, or a module called more than once)."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if is_site_node(n, modules)]
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    return {
        n.name: str(n.target) if n.op == "call_module" and calls[str(n.target)] == 1 else None for n in nodes
    }


def apply_plan_(model: nn.Module, plan: ReLUPlan, input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Applies ``plan`` in place by swapping ReLU modules for ``ReLUSite`` modules.

    Works where each planned site is a module called once (every zoo model). For functional
    ReLUs or a module called twice use :func:`apply_plan`, which returns an fx copy.
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
            f"site(s) {', '.join(missing[:5])} cannot be changed in place (a functional ReLU or a module "
            "called more than once); use relucut.apply_plan(model, plan), which returns an fx copy"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, decision in plan.decisions.items():
        path = swappable[name]
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, attr)
        if not is_site_module(old):
            raise RelucutError(f"site '{name}' at {path} is not a ReLU module")
        setattr(parent, attr, _site_module(decision).to(device))
    return model


def apply_plan(model: nn.Module, plan: ReLUPlan, input_size: tuple[int, ...] | None = None) -> nn.Module:
    """Returns a copy of ``model`` with ``plan`` applied; an fx GraphModule when sites need it."""
    swappable = _swappable(model)
    if all(swappable.get(name) for name in plan.decisions):
        return apply_plan_(copy.deepcopy(model), plan, input_size)
    return apply_plan_(sitify(model), plan, input_size)
