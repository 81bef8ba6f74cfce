"""SENet's mask learning as the SENet line of code does it: ReLUs where student and teacher differ.

During each epoch, every masked layer accumulates, per position, the batch-mean
|teacher post-ReLU - student output| over the training steps; after the epoch the layer keeps the
top-k positions of that sum (k = its ReLU budget), the mask the next epoch trains with. The
weights train meanwhile (KD from the teacher); the masks get no gradient. The alternative,
relucut's default, learns the scores by gradient (``LearnableMaskSite`` top-k, straight-through).
"""

from __future__ import annotations

import torch
from torch import nn

from relucut.finegrained.mask_site import LearnableMaskSite
from relucut.train.distributed import current_ranks


class DistanceMasks:
    """An engine callback over a student's top-k mask sites and the all-ReLU teacher.

    The student's step output is held until the teacher's forward of the same batch (the engine
    runs the student first), then the distance is added; evaluation passes run no teacher and
    leave the sums alone. The sums become the sites' scores at each epoch end (so checkpoints and
    resumed runs carry the masks).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, masks: dict[str, LearnableMaskSite]):
        paths = {id(m): path for path, m in student.named_modules()}
        self.masks = masks
        self.sums = {name: torch.zeros_like(site.scores) for name, site in masks.items()}
        self._student_out: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, site in masks.items():
            site.scores.requires_grad_(False)
            self._handles.append(site.register_forward_hook(self._keep_student(name)))
            teacher_site = teacher.get_submodule(paths[id(site)])
            self._handles.append(teacher_site.register_forward_hook(self._add_distance(name)))

    def _keep_student(self, name: str):
        def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
            if module.training:
                self._student_out[name] = out.detach()
        return hook

    def _add_distance(self, name: str):
        def hook(_module: nn.Module, _inputs, out: torch.Tensor) -> None:
            student = self._student_out.pop(name, None)
            if student is None or student.shape != out.shape:
                return
            distance = (out.detach().float() - student.float()).abs().mean(0)
            self.sums[name] += distance.reshape(self.sums[name].shape)
        return hook

    def on_epoch_start(self, _epoch: int, _model: nn.Module) -> None:
        for total in self.sums.values():
            total.zero_()

    def on_epoch_end(self, _epoch: int, _model: nn.Module, metrics: dict) -> None:
        changed = 0
        ranks = current_ranks()
        with torch.no_grad():
            for name, site in self.masks.items():
                ranks.sum_(self.sums[name])  # under torchrun: every rank's batches, the same top-k everywhere
                if not bool(self.sums[name].any()):
                    continue  # no training step saw this layer: keep its mask
                before = site.hard_mask()
                site.scores.copy_(self.sums[name])
                changed += int((site.hard_mask() != before).sum())
        metrics["mask_entries_changed"] = changed

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
