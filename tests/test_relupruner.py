"""ReLUPruner: its importance terms and keep schedule by hand, the exact budget, and resume."""

import math

import pytest
import torch
from fixtures.finegrained import TOTAL_RELUS, base_config, tiny_data, trained_base

import relucut.finegrained.relupruner as method
from relucut.errors import RelucutError
from relucut.finegrained.artifact import deployable, plan_of
from relucut.finegrained.common import mask_sites
from relucut.finegrained.relupruner import check_run, relupruner, steps_per_epoch
from relucut.methods.relupruner import ReLUPrunerConfig
from relucut.finegrained.relupruner_importance import (
    TaylorImportance,
    check_schedule,
    chooses_masks,
    keep_fraction,
    target_epoch,
)
from relucut.train.loop import TrainingInterrupted

# two samples of a 1x1x2 site: x and g = dL/dy
X1 = torch.tensor([[[[-2.0, 1.0]]], [[[-4.0, -2.0]]]])
G1 = torch.tensor([[[[3.0, 5.0]]], [[[1.0, 2.0]]]])
X2 = torch.tensor([[[[1.0, -3.0]]], [[[2.0, -1.0]]]])
G2 = torch.ones(2, 1, 1, 2)


def test_importance_terms_on_a_tiny_tensor_by_hand():
    imp = TaylorImportance({"a": (1, 1, 2)})
    imp.observe("a", X1, G1)
    # x < 0 in 2/2 and 1/2 samples; mean |g x| = (6+4)/2, (5+4)/2
    first = [1.0 * 5.0, 0.5 * 4.5]
    fisher = [0.01 * (9 + 1) / 2, 0.01 * (25 + 4) / 2]  # 0.01 mean g^2
    second = [0.5 * (4 + 16) / 2 * fisher[0], 0.5 * (1 + 4) / 2 * fisher[1]]  # 1/2 mean x^2 * fisher
    score1 = [0.05 * (f + s) for f, s in zip(first, second)]  # a lone site weighs 1
    torch.testing.assert_close(imp.fisher["a"].flatten(), torch.tensor(fisher))
    torch.testing.assert_close(imp.scores["a"].flatten(), torch.tensor(score1))

    imp.observe("a", X2, G2)
    frequency = [(1 + 0) / 2, (0.5 + 1) / 2]  # x < 0 averaged over both steps
    first = [frequency[0] * 1.5, frequency[1] * 2.0]
    fisher = [0.99 * fisher[0] + 0.01, 0.99 * fisher[1] + 0.01]
    second = [0.5 * 2.5 * fisher[0], 0.5 * 5.0 * fisher[1]]
    score2 = [0.95 * s + 0.05 * (f + q) for s, f, q in zip(score1, first, second)]
    torch.testing.assert_close(imp.scores["a"].flatten(), torch.tensor(score2))


def test_history_keeps_only_the_last_steps():
    imp = TaylorImportance({"a": (1, 1, 2)}, history=1, second_order=False, score_decay=0.0)
    imp.observe("a", X1, G1)
    imp.observe("a", X2, G2)  # with one step of history only X2's signs count: 0 and 1
    torch.testing.assert_close(imp.scores["a"].flatten(), torch.tensor([0.0, 2.0]))


def test_layer_weights_and_their_one_step_lag_by_hand():
    x = -torch.ones(2, 1, 1, 2)
    imp = TaylorImportance({"a": (1, 1, 2), "b": (1, 1, 2)})
    imp.observe("a", x, torch.ones(2, 1, 1, 2))
    imp.observe("b", x, 2 * torch.ones(2, 1, 1, 2))
    # v = EMA(mean per-sample |g|_2) * sqrt(EMA(mean g^2) + 1e-8) * (1 + 0.2 depth / (sites - 1))
    v_a = 0.05 * math.sqrt(2) * math.sqrt(0.05 + 1e-8) * 1.0
    v_b = 0.05 * 2 * math.sqrt(2) * math.sqrt(0.05 * 4 + 1e-8) * 1.2
    assert imp.layer_value == pytest.approx({"a": v_a, "b": v_b})
    assert imp.layer_weights() == pytest.approx({"a": 0.1, "b": 1.1})  # min-max to [0, 1], + 0.1
    # step 1: each site was weighed before any statistics of its own: 1
    assert float(imp.scores["a"][0, 0, 0]) == pytest.approx(0.05 * (1 + 0.5 * 0.01))
    imp.observe("a", x, torch.ones(2, 1, 1, 2))  # step 2: a is weighed by step 1's 0.1
    fisher = 0.99 * 0.01 + 0.01
    expected = 0.95 * 0.05 * (1 + 0.5 * 0.01) + 0.05 * 0.1 * (1 + 0.5 * fisher)
    assert float(imp.scores["a"][0, 0, 0]) == pytest.approx(expected)


def test_keep_schedule_values():
    authors = ReLUPrunerConfig(budget=1)  # 150 epochs, warm-up 5, the budget at 60 % of the rest
    assert target_epoch(authors) == 92
    assert [keep_fraction(authors, e, 0.1) for e in range(5)] == [1.0] * 5  # epochs 1..5 keep all
    assert keep_fraction(authors, 91, 0.1) == 0.1 and keep_fraction(authors, 149, 0.1) == 0.1
    assert keep_fraction(authors, 90, 0.1) > 0.1

    cfg = ReLUPrunerConfig(budget=1, prune_epochs=11, warmup_epochs=1, target_at=0.4)  # the budget in epoch 5
    assert target_epoch(cfg) == 5
    t = 0.2
    values = [keep_fraction(cfg, e, t) for e in range(6)]
    assert values[0] == 1.0  # progress 0
    assert values[1] == pytest.approx(t + (1 - t) * 0.5 * (1 + math.cos(math.pi / 8)))  # progress 1/4: 1/8
    assert values[3] == pytest.approx(t + (1 - t) * 0.5 * (1 + math.cos(math.pi * 0.75 ** 1.5)))
    assert values[4] == values[5] == t
    assert values == sorted(values, reverse=True)


def test_mask_choices_follow_the_interval_and_double_at_the_budget():
    cfg = ReLUPrunerConfig(budget=1, prune_epochs=6, warmup_epochs=2, target_at=0.5, update_every=2)
    assert target_epoch(cfg) == 4  # epochs counted from 1: the budget from 0-based epoch 3
    steps = 3
    chosen = [s for s in range(6 * steps) if chooses_masks(cfg, s, s // steps)]
    # none in epoch 0 (before warm-up ends), every 2nd global step in epochs 1-2, every 4th from epoch 3
    assert chosen == [3, 5, 7, 11, 15]


def test_a_schedule_that_cannot_reach_the_budget_is_refused():
    with pytest.raises(RelucutError, match="warmup_epochs must be below prune_epochs"):
        ReLUPrunerConfig(budget=10, prune_epochs=5, warmup_epochs=5).check()
    late = ReLUPrunerConfig(budget=10, prune_epochs=10, warmup_epochs=5, target_at=1.0, update_every=100)
    with pytest.raises(RelucutError, match="never chooses masks at the budget") as info:
        check_schedule(late, steps_per_epoch=3)
    assert "\n" not in str(info.value)
    check_schedule(late, steps_per_epoch=40)  # epoch 10 holds step 400: accepted
    with pytest.raises(RelucutError, match="never chooses masks at the budget"):  # digits: 3 steps an epoch
        check_run(late, base_config(), tiny_data())
    with pytest.raises(RelucutError, match="exceeds the network's 1,920 ReLUs"):  # 2,176 less the stem's 256
        check_run(ReLUPrunerConfig(**{**CFG.to_dict(), "budget": 2000, "linear_stem": True}), base_config(),
                  tiny_data())
    with pytest.raises(RelucutError, match="target_at must be in"):
        ReLUPrunerConfig(budget=10, target_at=1.5).check()


def test_config_round_trips_and_refuses_unknown_fields():
    cfg = ReLUPrunerConfig.authors(123, prune_epochs=7)
    assert cfg.from_scratch and ReLUPrunerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(RelucutError, match="unknown relupruner config field"):
        ReLUPrunerConfig.from_dict({"budget": 1, "alpha": 2})
    assert ReLUPrunerConfig(budget=1).milestones() == [150, 180, 210]
    assert ReLUPrunerConfig(budget=1, finetune_epochs=24).milestones() == [15, 18, 21]


# -- end to end on digits: 192 images at batch 64, 3 steps an epoch ---------------------------------
BUDGET = 700
CFG = ReLUPrunerConfig(budget=BUDGET, prune_epochs=5, warmup_epochs=1, target_at=0.5, update_every=1,
                       finetune_epochs=2, finetune_lr=0.01)


def run(workdir, cfg=CFG, **kw):
    data = tiny_data()
    base = trained_base(data)
    model = trained_base(data)
    res = relupruner(model, base, data, base_config(), cfg, workdir, progress=False, **kw)
    return res, model


def test_end_to_end_ends_at_exactly_the_budget(tmp_path):
    data = tiny_data()
    assert steps_per_epoch(base_config(), data) == 3
    res, model = run(tmp_path)
    assert res.prune_epochs_run == 5 and res.budget_epoch == 2
    kept = [c["kept"] for c in res.choices]
    # every step from epoch 0 (warm-up over, fraction 1) and every 2nd from epoch 2 (at the budget)
    assert [c["step"] for c in res.choices] == [0, 1, 2, 3, 4, 5, 7, 9, 11, 13]
    fraction = keep_fraction(CFG, 1, BUDGET / TOTAL_RELUS)
    assert kept[:3] == [TOTAL_RELUS] * 3 and kept[3:6] == [int(TOTAL_RELUS * fraction)] * 3
    assert BUDGET < kept[3] < TOTAL_RELUS and kept[6:] == [BUDGET] * 4
    sites = mask_sites(model)
    assert all(s.state == "frozen" for s in sites.values())
    assert sum(s.active_relus(s.shape) for s in sites.values()) == BUDGET
    assert sum(int(d.mask.sum()) for d in plan_of(model).decisions.values()) == BUDGET
    assert all(s.mask.shape == s.shape for s in sites.values())  # pixel granularity
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(deployable(model)(x), model(x), atol=1e-4, rtol=0)


REAL_TRAIN = method.train


def interrupting(label: str, at: int, counts: dict):
    """``train`` with a callback that counts each stage's steps and raises Ctrl-C at step ``at`` of
    stage ``label``."""

    class Interrupt:
        def __init__(self, stage):
            self.stage = stage

        def after_step(self, _step, _model):
            counts[self.stage] = counts.get(self.stage, 0) + 1
            if self.stage == label and counts[self.stage] == at:
                raise KeyboardInterrupt

    def train(cfg, run_dir, *, label="", callbacks=(), **kw):
        return REAL_TRAIN(cfg, run_dir, label=label, callbacks=[*callbacks, Interrupt(label)], **kw)

    return train


STAGES = [("ReLUPruner prune", "prune"), ("ReLUPruner fine-tune", "finetune")]


@pytest.mark.parametrize("stage, folder", STAGES)
def test_interrupted_run_resumes_to_the_same_masks_and_weights(tmp_path, monkeypatch, stage, folder):
    straight_counts: dict = {}
    monkeypatch.setattr(method, "train", interrupting("", -1, straight_counts))
    straight, straight_model = run(tmp_path / "straight")

    counts: dict = {}
    monkeypatch.setattr(method, "train", interrupting(stage, 3 + 2, counts))  # step 2 of the second epoch
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / folder / "last.pt", weights_only=True)["state"]["epoch"] == 1

    again: dict = {}
    monkeypatch.setattr(method, "train", interrupting("", -1, again))
    resumed, resumed_model = run(tmp_path / "resumed")
    assert again[stage] == straight_counts[stage] - 3  # went on after the saved epoch
    assert resumed.choices == straight.choices
    a, b = straight_model.state_dict(), resumed_model.state_dict()
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    plan_a, plan_b = plan_of(straight_model).decisions, plan_of(resumed_model).decisions
    assert plan_a.keys() == plan_b.keys() and all(torch.equal(plan_a[n].mask, plan_b[n].mask) for n in plan_a)


def test_linear_stem_spends_the_whole_budget_after_the_stem(tmp_path):
    cfg = ReLUPrunerConfig(**{**CFG.to_dict(), "linear_stem": True, "finetune_epochs": 0})
    res, model = run(tmp_path, cfg)
    sites = mask_sites(model)
    stem = [n for n in sites if n.startswith("stem")]
    assert stem and all(sites[n].active_relus(sites[n].shape) == 0 for n in stem)
    assert sum(s.active_relus(s.shape) for s in sites.values()) == BUDGET
    assert res.choices[0]["kept"] == TOTAL_RELUS - 256  # the keep fraction is of the ReLUs after the stem
