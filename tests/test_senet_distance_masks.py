"""SENet's distance mask learning: per layer, ReLUs where |teacher - student| summed over an epoch is largest."""

import copy

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

from relucut import RelucutError, count
from relucut.finegrained import LearnableMaskSite, export, install_mask_sites, load_export
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.distance_masks import DistanceMasks
from relucut.finegrained.senet import senet
from relucut.methods.senet import SENetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sums_are_the_epochs_teacher_student_distance_and_become_the_top_k():
    torch.manual_seed(0)
    teacher = frozen_copy(SPEC.build())
    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    _, masks = install_mask_sites(student, SPEC.input_size, "pixel")
    for site in masks.values():
        site.use_topk(site.scores.numel() // 4)
    learner = DistanceMasks(student, teacher, masks)
    name = next(iter(masks))
    site, teacher_site = masks[name], teacher.get_submodule(
        next(p for p, m in student.named_modules() if m is masks[name]))
    seen: dict[str, torch.Tensor] = {}
    taps = [teacher_site.register_forward_hook(lambda _m, _i, out: seen.__setitem__("t", out))]
    expected = torch.zeros_like(site.scores)
    learner.on_epoch_start(0, student)
    for _ in range(2):  # two training steps: student first, then the teacher, as the engine does
        x = torch.randn(6, *SPEC.input_size)
        taps.append(site.register_forward_hook(lambda _m, _i, out: seen.__setitem__("s", out.detach())))
        student(x)
        taps.pop().remove()
        teacher(x)
        expected += (seen["t"] - seen["s"]).abs().mean(0)
    student.eval()
    student(torch.randn(6, *SPEC.input_size))  # an evaluation pass: no teacher, nothing added
    teacher(torch.randn(3, *SPEC.input_size))  # a teacher pass without a student step: nothing added
    taps.pop().remove()
    assert torch.allclose(learner.sums[name], expected, atol=1e-6)
    before = site.hard_mask().clone()
    metrics: dict = {}
    learner.on_epoch_end(0, student, metrics)
    assert torch.equal(site.scores, learner.sums[name])
    chosen = site.hard_mask()
    assert int(chosen.sum()) == site.k
    assert float(expected[chosen].min()) >= float(expected[~chosen].max())  # the k largest distances
    assert metrics["mask_entries_changed"] >= int((chosen != before).sum())
    assert not site.scores.requires_grad  # the masks get no gradient
    learner.close()
    assert not site._forward_hooks and not teacher_site._forward_hooks


def test_senet_with_distance_masks_holds_each_layers_budget(tmp_path):
    data = tiny_data()
    base = trained_base(data)
    model = copy.deepcopy(base)
    cfg = SENetConfig(budget=900, mask_epochs=2, mask_learning="distance", finetune_epochs=1, milestones=[])
    result = senet(model, base, data, BASE, cfg, tmp_path / "run", progress=False)
    sites = {n.replace(".", "_"): s for n, s in model.named_modules() if isinstance(s, LearnableMaskSite)}
    assert all(int(s.mask.sum()) == result.layer_budget[n] for n, s in sites.items())
    epochs = (tmp_path / "run" / "masks" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 2 and '"mask_entries_changed"' in epochs[0]
    export(tmp_path / "export", model, SPEC)
    assert count(load_export(tmp_path / "export"), SPEC.input_size).relus == 900


def test_unknown_mask_learning_is_refused():
    with pytest.raises(RelucutError, match="unknown mask_learning 'magic'"):
        SENetConfig(budget=10, mask_learning="magic").check()
