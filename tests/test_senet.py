"""SENet: per-layer budgets from pruning sensitivity, masks within them, frozen fine-tuning."""

import copy
import random

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, TOTAL_RELUS, tiny_data, trained_base

from relucut import RelucutError, count, find_sites
from relucut.finegrained import LearnableMaskSite, allocate_layer_budgets, export, load_export
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.senet import senet
from relucut.methods.senet import SENetConfig
from relucut.finegrained.sensitivity import (
    layer_budgets,
    preceding_convs,
    pruning_keep_fractions,
    relu_sensitivity,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_allocation_sums_exactly_and_respects_caps():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        sizes = {f"l{i}": rng.randint(0, 500) for i in range(n)}
        total = sum(sizes.values())
        if total == 0:
            continue
        weights = {k: rng.random() * rng.choice([0, 1, 1, 100]) for k in sizes}
        budget = rng.randint(1, total)
        alloc = allocate_layer_budgets(weights, sizes, budget)
        assert sum(alloc.values()) == budget
        assert all(0 <= alloc[k] <= sizes[k] for k in sizes)


def test_allocation_is_proportional_with_largest_remainder():
    alloc = allocate_layer_budgets({"a": 1, "b": 1, "c": 1}, {"a": 100, "b": 100, "c": 100}, 100)
    assert sorted(alloc.values()) == [33, 33, 34]
    # 'a' wants 90 of 100 but holds only 10: its excess goes to the others in proportion
    alloc = allocate_layer_budgets({"a": 9, "b": 1}, {"a": 10, "b": 100}, 100)
    assert alloc == {"a": 10, "b": 90}


@pytest.mark.parametrize("budget, needle", [(0, "must be > 0"), (TOTAL_RELUS + 1, "exceeds")])
def test_budget_errors(budget, needle):
    model = SPEC.build()
    sites = find_sites(model, SPEC.input_size)
    with pytest.raises(RelucutError, match=needle):
        layer_budgets(sites, relu_sensitivity(model, 0.1), budget)


def test_preceding_conv_is_the_main_path_conv():
    convs = preceding_convs(SPEC.build())
    assert convs["stem_relu"] == "stem.conv"
    assert convs["s1_0_relu1"] == "s1.0.conv1"
    assert convs["s1_0_relu2"] == "s1.0.conv2"
    assert convs["s2_0_relu2"] == "s2.0.conv2"  # not the shortcut projection s2.0.shortcut.0


def test_pruning_keeps_the_density_overall():
    model = SPEC.build()
    kept = pruning_keep_fractions(model, 0.2)
    sizes = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    overall = sum(kept[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.2, abs=0.01)
    assert len({round(v, 3) for v in kept.values()}) > 1  # layers differ
    with pytest.raises(RelucutError, match="--density"):
        pruning_keep_fractions(model, 1.5)


def test_layer_budgets_follow_sensitivity():
    model = SPEC.build()
    sites = find_sites(model, SPEC.input_size)
    sens = relu_sensitivity(model, 0.1)
    budget = layer_budgets(sites, sens, 999)
    assert sum(budget.values()) == 999
    kept = {s.name: budget[s.name] / s.numel for s in sites}
    hi = max(sens, key=sens.get)
    lo = min(sens, key=sens.get)
    assert kept[hi] >= kept[lo]


def test_senet_masks_match_layer_budgets_and_stay_frozen(tmp_path):
    data = tiny_data()
    base = trained_base(data)
    model = copy.deepcopy(base)
    frozen = {}

    def snapshot(m):
        frozen.update({n: s.mask.clone() for n, s in m.named_modules() if isinstance(s, LearnableMaskSite)})

    cfg = SENetConfig(budget=900, mask_epochs=1, finetune_epochs=1, milestones=[])
    result = senet(model, base, data, BASE, cfg, tmp_path / "run", progress=False, after_stage2=snapshot)
    assert sum(result.layer_budget.values()) == 900
    sites = {n: s for n, s in model.named_modules() if isinstance(s, LearnableMaskSite)}
    for path, site in sites.items():
        assert int(site.mask.sum()) == result.layer_budget[path.replace(".", "_")]
        assert torch.equal(site.mask, frozen[path])
    export(tmp_path / "export", model, SPEC)
    assert count(load_export(tmp_path / "export"), SPEC.input_size).relus == 900


class Killed(Exception):
    pass


def test_rerun_after_a_kill_resumes_to_the_same_model(tmp_path, monkeypatch):
    import importlib

    senet_module = importlib.import_module("relucut.finegrained.senet")  # the package re-exports senet()

    data = tiny_data()
    base = trained_base(data)
    cfg = SENetConfig(budget=900, mask_epochs=1, finetune_epochs=3, milestones=[2],
                      shallow=True, dth=0.3)
    straight = copy.deepcopy(base)
    senet(straight, base, data, BASE, cfg, tmp_path / "straight", progress=False)

    real_gate = senet_module.gate_value

    def kill_in_third_epoch(epoch, ramp, schedule):
        if epoch == 2:
            raise Killed
        return real_gate(epoch, ramp, schedule)

    monkeypatch.setattr(senet_module, "gate_value", kill_in_third_epoch)
    with pytest.raises(Killed):
        senet(copy.deepcopy(base), base, data, BASE, cfg, tmp_path / "killed", progress=False)
    assert (tmp_path / "killed" / "masks" / "final.json").is_file()  # stage 2 had finished
    assert torch.load(tmp_path / "killed" / "finetune" / "last.pt", weights_only=True)["state"]["epoch"] == 2
    monkeypatch.setattr(senet_module, "gate_value", real_gate)
    resumed = copy.deepcopy(base)
    senet(resumed, base, data, BASE, cfg, tmp_path / "killed", progress=False)
    got, want = resumed.state_dict(), straight.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-6), key


def test_sparse_training_probe_masks_to_the_density_and_sets_budgets(tmp_path):
    from relucut.finegrained.sparse_probe import scheduled_density

    assert scheduled_density(-1, 4, 0.1) == pytest.approx(1.0)
    assert scheduled_density(3, 4, 0.1) == pytest.approx(0.1)
    assert 0.1 < scheduled_density(1, 4, 0.1) < scheduled_density(0, 4, 0.1) < 1.0
    data = tiny_data()
    base = trained_base(data)
    model = copy.deepcopy(base)
    cfg = SENetConfig(budget=900, sensitivity="sparse-training", sensitivity_epochs=2, mask_epochs=1,
                      finetune_epochs=1, milestones=[])
    result = senet(model, base, data, BASE, cfg, tmp_path / "run", progress=False)
    assert sum(result.layer_budget.values()) == 900
    probe = [line for line in (tmp_path / "run" / "sensitivity" / "metrics.jsonl").read_text().splitlines()]
    assert len(probe) == 2  # the probe is an engine run of its own
    one_shot = relu_sensitivity(base, 0.1)
    assert set(result.sensitivity) == set(one_shot) and result.sensitivity != one_shot
    from relucut.finegrained.common import stage_config
    from relucut.finegrained.sparse_probe import sparse_training_keep_fractions

    kept = sparse_training_keep_fractions(base, frozen_copy(base), data, stage_config(BASE, epochs=2, lr=0.01),
                                          0.1, tmp_path / "probe", progress=False)
    sizes = {n: m.weight.numel() for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(kept) == set(sizes)
    overall = sum(kept[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.1, abs=0.002)  # the target density, over all convs
    with pytest.raises(RelucutError, match="unknown sensitivity 'magic'"):
        SENetConfig(budget=10, sensitivity="magic").check()


def test_a_given_layer_budget_replaces_stage_one(tmp_path):
    data = tiny_data()
    base = trained_base(data)
    sites = list(find_sites(base, SPEC.input_size))
    given = {s.name: 0 for s in sites}
    given[sites[-1].name] = 30  # in the last layer (32 ReLUs) and the stem only
    given[sites[0].name] = 120
    model = copy.deepcopy(base)
    cfg = SENetConfig(budget=150, layer_budget=given, mask_epochs=1, finetune_epochs=1, milestones=[])
    result = senet(model, base, data, BASE, cfg, tmp_path / "run", progress=False)
    assert result.layer_budget == given
    kept = {n.replace(".", "_"): int(s.mask.sum()) for n, s in model.named_modules() if isinstance(s, LearnableMaskSite)}
    assert kept == given
    with pytest.raises(RelucutError, match="sums to 150, not the budget 151"):
        senet(copy.deepcopy(base), base, data, BASE, SENetConfig(budget=151, layer_budget=given), tmp_path / "b",
              progress=False)
    with pytest.raises(RelucutError, match="missing: " + sites[0].name):
        senet(copy.deepcopy(base), base, data, BASE,
              SENetConfig(budget=30, layer_budget={k: v for k, v in given.items() if k != sites[0].name}),
              tmp_path / "c", progress=False)
