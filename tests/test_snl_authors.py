"""SNL's authors' recipe as an option: Adam on weights, the per-epoch L1 rule, threshold binarization."""

import copy
import json

import pytest
import torch
from fixtures.finegrained import BASE, TOTAL_RELUS, base_config, tiny_data, trained_base

from relucut import RelucutError
from relucut.finegrained import LearnableMaskSite
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.snl import snl_finetune, snl_search
from relucut.methods.snl import SNLConfig
from relucut.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    data = tiny_data()
    return data, trained_base(data)


def test_authors_recipe_round_trips_and_matches_their_loss_scale():
    cfg = SNLConfig.authors(1000, search_epochs=7)
    assert SNLConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert (cfg.optimizer, cfg.weight_decay, cfg.lr, cfg.mask_lr) == ("adam", 0.0, 1e-3, 1e-3)
    assert (cfg.l1_rule, cfg.l1_growth, cfg.l1_grace_epochs, cfg.binarize, cfg.clamp) == ("epochs", 1.1, 5, "threshold", False)
    # CE + KD + 1e-5 sum|alpha| in relucut's (1 - w) CE + w KD: half of each term
    assert cfg.kd_weight == 0.5 and cfg.l1_init == pytest.approx(0.5e-5) and not cfg.l1_per_relu
    # their fine-tuning step (SGD 1e-3, wd 5e-4 on the full loss) on the halved loss
    assert cfg.finetune_lr * cfg.kd_weight == pytest.approx(1e-3)
    assert cfg.finetune_weight_decay / cfg.kd_weight == pytest.approx(5e-4)
    assert cfg.search_epochs == 7 and SNLConfig.authors(5).search_epochs == 2000


@pytest.mark.parametrize("field, value, needle", [("l1_rule", "daily", "unknown l1_rule"),
                                                  ("binarize", "round", "unknown binarize"),
                                                  ("finetune_schedule", "linear", "unknown finetune_schedule")])
def test_bad_recipe_fields_are_refused(field, value, needle):
    with pytest.raises(RelucutError, match=needle):
        SNLConfig(budget=10, **{field: value}).check()


def test_epoch_rule_grows_after_each_epoch_without_a_new_low(setup, tmp_path):
    data, base = setup
    # masks cannot move: no epoch sets a new low, so every epoch from the grace period on grows it
    cfg = SNLConfig.authors(500, search_epochs=4, mask_lr=1e-12, lr=1e-12, l1_init=0.5, l1_growth=2.0,
                            l1_grace_epochs=2, finetune_epochs=0)
    result = snl_search(copy.deepcopy(base), frozen_copy(base), data, BASE, cfg, tmp_path, progress=False)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert [h["relus"] for h in result.history] == [TOTAL_RELUS - 256] * 4  # the stem ReLU is dropped
    assert result.l1_final == pytest.approx(0.5 * 2.0 ** 2)
    assert result.search_epochs_run == 4
    assert result.forced_topk  # the threshold count is over the budget: top-k to it instead


def test_authors_search_stops_at_an_epoch_end_and_keeps_the_threshold_count(setup, tmp_path):
    data, base = setup
    model = copy.deepcopy(base)
    cfg = SNLConfig.authors(1200, search_epochs=30, mask_lr=0.05, l1_init=0.05, finetune_epochs=1)
    result = snl_search(model, frozen_copy(base), data, BASE, cfg, tmp_path / "search", progress=False)
    assert result.search_epochs_run < 30 and not result.forced_topk
    assert result.history[-1]["relus"] == result.relaxed_relus_at_stop <= 1200
    assert all(h["relus"] > 1200 for h in result.history[:-1])  # it ran until the count was in budget
    sites = [m for m in model.modules() if isinstance(m, LearnableMaskSite)]
    kept = sum(m.active_relus(m.shape) for m in sites)
    assert kept == result.relaxed_relus_at_stop  # thresholded, not topped up to the budget
    snl_finetune(model, frozen_copy(base), data, BASE, cfg, tmp_path / "finetune", progress=False)
    assert sum(m.active_relus(m.shape) for m in sites) == kept
    metrics = [json.loads(line) for line in (tmp_path / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lr"] == pytest.approx(2e-3)


def test_adam_optimizer_trains_and_resumes_its_state(tmp_path):
    data = tiny_data()
    cfg = base_config(optimizer="adam", lr=1e-3, epochs=2)
    train(cfg, tmp_path / "run", data=data, progress=False)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    state = next(iter(last["optimizer"]["state"].values()))
    assert "exp_avg" in state and "momentum_buffer" not in state
    with pytest.raises(RelucutError, match="unknown optimizer 'rmsprop'"):
        TrainConfig(optimizer="rmsprop").resolved()
