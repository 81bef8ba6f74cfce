"""A ReLU site whose mask is learned: SNL's relaxed mask, SENet's top-k mask, then a frozen one.

During learning the site computes ``m * relu(x) + (1 - m) * x``. Frozen, it is a plain
``ReLUSite`` in ``mask`` mode, so counting, plans and export see an ordinary masked site.

With ``linearize="poly2"`` the positions without a ReLU compute a per-channel polynomial instead
of x (AutoReP, Peng et al., ICCV 2023: ``m * relu(x) + (1 - m) * poly(x)``), its coefficients
learned with the weights. As in the authors' code (github.com/harveyp123/AutoReP,
``models_util/model_spReLU.py`` and ``auto_poly.py``): one c0, c1, c2 per channel,
poly(x) = scale_x2 * w2 * x^2 + w1 * x + w0 with the trained w2 scaled by ``POLY_X2_SCALE`` (their
``--scale_x2`` 0.1, the CIFAR scripts' value: a slower-moving square term), started at the
identity (theirs: w1 in [1, 1 + 1e-4], w0 and w2 in [0, 1e-4]; here exactly 1 and 0), and trained
by the weights' optimizer (theirs: Adam in mask training, SGD with weight decay in fine-tuning).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.site_module import LINEARIZE, ReLUSite, is_site_module, poly2
from relucut.sites import SiteMap, find_sites

GRANULARITIES = ("pixel", "channel")
# SNL counts a relaxed mask entry as a ReLU while it is above this value
ACTIVE_THRESHOLD = 1e-2
POLY_X2_SCALE = 0.1  # AutoReP's scale_x2 (util_func/config.py, scripts/cifar100.sh): c2 = 0.1 * w2


class LearnableMaskSite(ReLUSite):
    """A site with learnable mask ``scores`` (the papers' alpha; ``alpha`` in relucut is the
    channel scale) of shape (C,H,W) (pixel) or (C,1,1) (channel).

    States: ``relaxed`` (SNL: m = scores in [0,1]), ``topk`` (SENet: m = the ``k`` largest scores,
    straight-through gradient), ``frozen`` (a binary mask; behaves exactly as ``ReLUSite``).
    """

    def __init__(self, shape: tuple[int, ...], granularity: str = "pixel", init: float = 1.0,
                 linearize: str = "identity"):
        if granularity not in GRANULARITIES:
            raise RelucutError(f"unknown mask granularity '{granularity}'; use pixel or channel")
        if linearize not in LINEARIZE:
            raise RelucutError(f"unknown linearization '{linearize}'; use {' or '.join(LINEARIZE)}")
        super().__init__("relu")
        self.shape = tuple(int(s) for s in shape)
        self.granularity = granularity
        mask_shape = self.shape if granularity == "pixel" else (self.shape[0],) + (1,) * (len(self.shape) - 1)
        self.scores = nn.Parameter(torch.full(mask_shape, float(init)))
        self.state = "relaxed"
        self.k = 0  # mask units kept in the topk state
        # w0, w1, w2 per channel, at the identity; None: positions without a ReLU pass x through
        identity = torch.zeros(3, self.shape[0])
        identity[1] = 1.0
        self.poly_weight = nn.Parameter(identity) if linearize == "poly2" else None

    def coefficients(self) -> torch.Tensor | None:
        """c0, c1, c2 per channel (3, C) as the forward uses them: c2 = POLY_X2_SCALE * w2."""
        if self.poly_weight is None:
            return None
        scale = torch.tensor([1.0, 1.0, POLY_X2_SCALE], device=self.poly_weight.device).view(3, 1)
        return self.poly_weight * scale

    def linearize_(self, kind: str) -> None:
        """Makes the positions without a ReLU pass x through (``identity``): a stem a method
        takes out of the budget stays linear, as in the authors' architecture."""
        if kind != "identity":
            raise ValueError("only the identity can be set after construction")
        self.poly_weight = None

    @property
    def unit_relus(self) -> int:
        """ReLUs one mask entry stands for: 1 per pixel, H*W per channel."""
        return math.prod(self.shape) // self.scores.numel()

    # -- state changes -------------------------------------------------------------------------
    def use_topk(self, k: int) -> None:
        if not 0 <= k <= self.scores.numel():
            raise ValueError(f"k={k} outside [0, {self.scores.numel()}]")
        self.state, self.k = "topk", int(k)

    def freeze(self, mask: torch.Tensor) -> None:
        """Fixes a binary mask (of the scores' shape); the scores stop taking part in the forward."""
        self.state = "frozen"
        self.mode = "mask"
        self.mask = mask.to(device=self.scores.device, dtype=torch.bool).reshape(self.scores.shape)
        self.scores.requires_grad_(False)

    def hard_mask(self) -> torch.Tensor:
        """The binary mask this site evaluates now (relaxed: entries above the threshold)."""
        if self.state == "frozen":
            return self.mask
        if self.state == "topk":
            return _topk_indicator(self.scores.detach(), self.k)
        return self.scores.detach() > ACTIVE_THRESHOLD

    # -- forward and counting ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.state == "frozen":
            return super().forward(x)
        if self.state == "topk":
            hard = _topk_indicator(self.scores, self.k).to(x.dtype)
            m = hard + self.scores - self.scores.detach()  # straight-through: forward hard, gradient to the scores
        else:
            m = self.scores
        poly = self.coefficients()
        other = x if poly is None else poly2(x, poly)
        return other + m * (torch.relu(x) - other)

    def active_relus(self, shape: tuple[int, ...]) -> int:
        return int(torch.broadcast_to(self.hard_mask(), tuple(shape)).sum())

    def extra_repr(self) -> str:
        on = int(self.hard_mask().sum())
        return f"{self.granularity}, state={self.state}, ones={on}/{self.scores.numel()}"


def _topk_indicator(scores: torch.Tensor, k: int) -> torch.Tensor:
    flat = scores.flatten()
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        out[torch.topk(flat, k, sorted=False).indices] = True
    return out.view_as(scores)


def install_mask_sites(
    model: nn.Module, input_size: tuple[int, ...], granularity: str = "pixel", init: float = 1.0,
    exclude: tuple[str, ...] = (), linearize: str = "identity",
) -> tuple[SiteMap, dict[str, LearnableMaskSite]]:
    """Replaces every ReLU module called once with a ``LearnableMaskSite`` (in place); with
    ``linearize="poly2"`` its positions without a ReLU compute a learned polynomial.

    Returns the model's sites and the new mask modules by site name.
    """
    from relucut.plan import _swappable  # same rule apply_plan_ uses for in-place edits

    sites = find_sites(model, input_size)
    paths = _swappable(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    masks: dict[str, LearnableMaskSite] = {}
    for site in sites:
        if site.name in exclude:
            continue
        path = paths.get(site.name)
        if path is None:
            raise RelucutError(
                f"site '{site.name}' is a functional ReLU or a module called twice; learnable masks need one "
                "nn.ReLU module per call (use relucut.sitify(model) first)"
            )
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if not is_site_module(getattr(parent, attr)):
            raise RelucutError(f"site '{site.name}' at {path} is not a ReLU module")
        module = LearnableMaskSite(site.shape, granularity, init, linearize).to(device)
        setattr(parent, attr, module)
        masks[site.name] = module
    return sites, masks


def mask_parameters(masks: dict[str, LearnableMaskSite]) -> list[nn.Parameter]:
    return [m.scores for m in masks.values()]
