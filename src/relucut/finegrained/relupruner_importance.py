"""ReLUPruner's stage 1 (Li et al., AAAI 2026): the importance of every ReLU position, the keep
schedule, and the engine callback that re-chooses the masks, as the authors' code does them
(github.com/Orange2019220/ReluPruner at e74b70a: ``relupruner/importance.py``, ``pruning.py``).

Each training step, for each ReLU site l in forward order, with x its input and g = dL/dy the loss
gradient at its output (both N x C x H x W), per position (C x H x W):

    p_l    = mean over the last ``history`` steps of the batch fraction with x < 0   (l. 80-85)
    first  = p_l * mean_n |g x|                                                       (l. 89-91)
    F_l   <- 0.99 F_l + 0.01 mean_n g^2          (a Fisher-diagonal EMA)              (l. 94-97)
    second = 1/2 mean_n x^2 * F_l                                                     (l. 98)
    S_l   <- 0.95 S_l + 0.05 (first + second) * w_l   (the score masks are chosen by) (l. 101-110)

The site weight w_l comes from EMAs (0.95) of the batch-mean per-sample gradient norm G_l and of
the mean squared gradient Q_l: v_l = G_l sqrt(Q_l + 1e-8) (1 + 0.2 l / max(1, L - 1)), L the sites
seen so far, then min-max normalized over the sites, plus 0.1 (all 1 while equal or unseen;
l. 29-58). As in their code, w_l is read before site l's own statistics take the step, while
the sites before it in the same step already have.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from relucut.errors import RelucutError
from relucut.finegrained.budget import binarize_to_budget
from relucut.finegrained.common import total_relus
from relucut.finegrained.mask_site import LearnableMaskSite


class TaylorImportance:
    """Per-position scores S of a set of ReLU sites; ``observe`` once per site per step, in order."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], *, history: int = 10, score_decay: float = 0.95,
                 fisher_decay: float = 0.99, layer_decay: float = 0.95, depth_bias: float = 0.2,
                 second_order: bool = True, layer_weighting: bool = True, device: torch.device | str = "cpu"):
        self.names = list(shapes)
        self.history, self.depth_bias = history, depth_bias
        self.score_decay, self.fisher_decay, self.layer_decay = score_decay, fisher_decay, layer_decay
        self.second_order, self.layer_weighting = second_order, layer_weighting
        self.scores = {n: torch.zeros(shapes[n], device=device) for n in self.names}
        self.fisher = {n: torch.zeros(shapes[n], device=device) for n in self.names}
        self.negative: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        self.grad_norm: dict[str, float] = {}  # G_l
        self.grad_square: dict[str, float] = {}  # Q_l
        self.layer_value: dict[str, float] = {}  # v_l
        self.seen = 0  # L: sites observed so far (their code's total_layers)

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor, g: torch.Tensor) -> None:
        """One step's input ``x`` and output gradient ``g`` of site ``name``."""
        x, g = x.float(), g.float()
        negative = self.negative[name]
        negative.append((x < 0).float().mean(0))
        del negative[:-self.history]
        frequency = torch.stack(negative).mean(0)
        value = frequency * (g * x).abs().mean(0)
        if self.second_order:
            self.fisher[name].mul_(self.fisher_decay).add_((1 - self.fisher_decay) * g.square().mean(0))
            value = value + 0.5 * x.square().mean(0) * self.fisher[name]
        if self.layer_weighting:
            value = value * self.layer_weights().get(name, 1.0)
            self._update_layer(name, g)
        self.scores[name].mul_(self.score_decay).add_((1 - self.score_decay) * value)

    def _update_layer(self, name: str, g: torch.Tensor) -> None:
        index = self.names.index(name)
        self.seen = max(self.seen, index + 1)
        norm = float(g.flatten(1).norm(dim=1).mean())
        square = float(g.square().mean())
        d = self.layer_decay
        self.grad_norm[name] = d * self.grad_norm.get(name, 0.0) + (1 - d) * norm
        self.grad_square[name] = d * self.grad_square.get(name, 0.0) + (1 - d) * square
        depth = 1.0 + self.depth_bias * index / max(1, self.seen - 1)
        self.layer_value[name] = self.grad_norm[name] * math.sqrt(self.grad_square[name] + 1e-8) * depth

    def layer_weights(self) -> dict[str, float]:
        """w_l of every site seen so far."""
        if not self.layer_value:
            return {}
        low, high = min(self.layer_value.values()), max(self.layer_value.values())
        if high == low:
            return {n: 1.0 for n in self.layer_value}
        return {n: (v - low) / (high - low) + 0.1 for n, v in self.layer_value.items()}

    # -- checkpointing (an engine callback's state: plain tensors, floats and lists) -------------
    def state_dict(self) -> dict:
        return {"scores": dict(self.scores), "fisher": dict(self.fisher),
                "negative": {n: list(v) for n, v in self.negative.items()},
                "grad_norm": dict(self.grad_norm), "grad_square": dict(self.grad_square),
                "layer_value": dict(self.layer_value), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        device = self.scores[self.names[0]].device if self.names else "cpu"
        self.scores = {n: t.to(device) for n, t in state["scores"].items()}
        self.fisher = {n: t.to(device) for n, t in state["fisher"].items()}
        self.negative = {n: [t.to(device) for t in v] for n, v in state["negative"].items()}
        self.grad_norm, self.grad_square = dict(state["grad_norm"]), dict(state["grad_square"])
        self.layer_value, self.seen = dict(state["layer_value"]), int(state["seen"])


# -- the keep schedule (their ProgressiveMaskScheduler, pruning.py l. 40-80; epochs from 1 there) --
def target_epoch(cfg) -> int:
    """The epoch, counted from 1, from which the kept fraction is the budget."""
    return int(cfg.warmup_epochs + (cfg.prune_epochs - cfg.warmup_epochs) * cfg.target_at)


def keep_fraction(cfg, epoch: int, target: float) -> float:
    """The fraction of ReLUs kept in (0-based) ``epoch`` when the budget is the fraction ``target``."""
    now, start, end = epoch + 1, cfg.warmup_epochs, target_epoch(cfg)
    if now < start:
        return 1.0
    if now >= end:
        return target
    progress = min(1.0, max(0.0, (now - start) / max(1, end - start)))
    return target + (1.0 - target) * 0.5 * (1.0 + math.cos(math.pi * progress ** 1.5))


def chooses_masks(cfg, step: int, epoch: int) -> bool:
    """Whether the masks are re-chosen after global (0-based) ``step`` of ``epoch``."""
    if epoch + 1 < cfg.warmup_epochs:
        return False
    return (step + 1) % (cfg.update_every * (2 if epoch + 1 >= target_epoch(cfg) else 1)) == 0


def check_schedule(cfg, steps_per_epoch: int) -> None:
    """Refuses a schedule whose masks are never chosen at the budget (their run then has no
    at-budget checkpoint and its fine-tuning stage refuses to start)."""
    end, every = target_epoch(cfg), 2 * cfg.update_every
    first, last = (end - 1) * steps_per_epoch + 1, cfg.prune_epochs * steps_per_epoch
    if last // every * every < first:
        raise RelucutError(
            f"the keep schedule never chooses masks at the budget: it reaches it in epoch {end} of "
            f"{cfg.prune_epochs}, and the {last - first + 1} steps from there hold no multiple of its "
            f"{every}-step interval; add prune epochs or lower update_every or target_at")


# -- stage 1 as an engine callback ---------------------------------------------------------------
class _Scores(NamedTuple):  # what binarize_to_budget reads of a mask site
    scores: torch.Tensor
    unit_relus: int


class TaylorPruning:
    """Engine callback: records each site's input and output gradient on training steps (forward
    and tensor hooks), updates the importance after every step and re-chooses the masks (the
    sites' scores, 0 or 1, so the model's checkpoints carry them). The importance state is
    checkpointed with the run (``state_dict``), so a resumed run goes on bit-identically."""

    def __init__(self, masks: dict[str, LearnableMaskSite], cfg):
        self.masks, self.cfg = masks, cfg
        self.total = sum(math.prod(m.shape) for m in masks.values())
        device = next(iter(masks.values())).scores.device
        self.importance = TaylorImportance(
            {n: m.shape for n, m in masks.items()}, history=cfg.history, score_decay=cfg.score_decay,
            fisher_decay=cfg.fisher_decay, layer_decay=cfg.layer_decay, depth_bias=cfg.depth_bias,
            second_order=cfg.second_order, layer_weighting=cfg.layer_weighting, device=device)
        self.epoch = 0
        self.choices: list[dict] = []  # one entry per mask choice: step, epoch, kept
        self._inputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._record(n)) for n, m in masks.items()]

    def _record(self, name: str):
        def hook(module: nn.Module, inputs, out: torch.Tensor) -> None:
            if module.training and torch.is_grad_enabled() and out.requires_grad:
                self._inputs[name] = inputs[0].detach()
                out.register_hook(lambda g: self._grads.__setitem__(name, g.detach()))
        return hook

    def on_epoch_start(self, epoch: int, _model: nn.Module) -> None:
        self.epoch = epoch

    def after_step(self, step: int, _model: nn.Module) -> bool:
        seen = [n for n in self.masks if n in self._inputs and n in self._grads]
        if not seen:
            raise RelucutError("ReLUPruner saw no activations or gradients at its ReLU sites; "
                               "run without compile (its hooks need the eager model)")
        for name in seen:
            self.importance.observe(name, self._inputs[name], self._grads[name])
        self._inputs.clear()
        self._grads.clear()
        if chooses_masks(self.cfg, step, self.epoch):
            self.choose(step)
        return False

    @torch.no_grad()
    def choose(self, step: int) -> None:
        fraction = keep_fraction(self.cfg, self.epoch, self.cfg.budget / self.total)
        at_budget = self.epoch + 1 >= target_epoch(self.cfg)
        kept = self.cfg.budget if at_budget else max(1, int(self.total * fraction))
        chosen = binarize_to_budget({n: _Scores(s, 1) for n, s in self.importance.scores.items()}, kept)
        for name, site in self.masks.items():
            site.scores.copy_(chosen[name].reshape(site.scores.shape))
            if dist.is_available() and dist.is_initialized():  # every rank trains rank 0's masks
                dist.broadcast(site.scores.data, 0)
        self.choices.append({"step": step, "epoch": self.epoch, "kept": kept})

    def on_epoch_end(self, epoch: int, _model: nn.Module, metrics: dict) -> None:
        metrics["relus"] = total_relus(self.masks)
        metrics["keep_fraction"] = keep_fraction(self.cfg, epoch, self.cfg.budget / self.total)

    def state_dict(self) -> dict:
        return {"importance": self.importance.state_dict(), "choices": [dict(c) for c in self.choices]}

    def load_state_dict(self, state: dict) -> None:
        self.importance.load_state_dict(state["importance"])
        self.choices = [dict(c) for c in state["choices"]]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
