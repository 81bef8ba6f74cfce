"""stem_relu="drop": SNL and SENet without a stem ReLU, as SNL's ResNet18 and the papers' counts."""

import copy

import pytest
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

from relucut import RelucutError, count, find_sites
from relucut.finegrained import LearnableMaskSite, export, load_export
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.senet import senet
from relucut.methods.senet import SENetConfig
from relucut.finegrained.snl import snl_search
from relucut.methods.snl import SNLConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    data = tiny_data()
    return data, trained_base(data)


def _stem_mask(model) -> LearnableMaskSite:
    return model.stem.relu


def test_snl_without_its_stem_relu_spends_the_budget_elsewhere(setup, tmp_path):
    data, base = setup
    model = copy.deepcopy(base)
    cfg = SNLConfig(budget=600, stem_relu="drop", search_epochs=1, finetune_epochs=0, mask_lr=0.2,
                    check_every=1, l1_init=1.0, l1_growth=2.0)
    result = snl_search(model, frozen_copy(base), data, BASE, cfg, tmp_path / "search", progress=False)
    assert result.relaxed_relus_at_stop <= 2176 - 256  # the stem's 256 were never counted
    stem = _stem_mask(model)
    assert stem.state == "frozen" and int(stem.mask.sum()) == 0
    export(tmp_path / "export", model, SPEC)
    cost = count(load_export(tmp_path / "export"), SPEC.input_size)
    assert cost.relus == 600 and cost.relus_without_stem == 600
    with pytest.raises(RelucutError, match="exceeds the network's 1,920 ReLUs"):
        snl_search(copy.deepcopy(base), frozen_copy(base), data, BASE,
                   SNLConfig(budget=2000, stem_relu="drop"), tmp_path / "over", progress=False)


def test_senet_without_its_stem_relu_spends_the_budget_elsewhere(setup, tmp_path):
    data, base = setup
    student = copy.deepcopy(base)
    cfg = SENetConfig(budget=300, stem_relu="drop", mask_epochs=1, finetune_epochs=1, milestones=[])
    result = senet(student, base, data, BASE, cfg, tmp_path / "run", progress=False)
    assert result.layer_budget["stem_relu"] == 0 and sum(result.layer_budget.values()) == 300
    cost = count(student, SPEC.input_size)
    assert cost.relus == 300 and cost.relus_without_stem == 300
    assert int(_stem_mask(student).mask.sum()) == 0


def test_stem_relu_errors(setup, tmp_path):
    data, base = setup
    given = {s.name: 0 for s in find_sites(base, SPEC.input_size)}
    given["stem_relu"], given["s4_1_relu2"] = 10, 20
    with pytest.raises(RelucutError, match="stem_relu='drop' removes"):
        senet(copy.deepcopy(base), base, data, BASE,
              SENetConfig(budget=30, stem_relu="drop", layer_budget=given), tmp_path / "b", progress=False)
    given["stem_relu"], given["s4_1_relu1"] = 0, 10  # a dropped stem given 0 is fine
    result = senet(copy.deepcopy(base), base, data, BASE,
                   SENetConfig(budget=30, stem_relu="drop", layer_budget=given, mask_epochs=0,
                               finetune_epochs=1, milestones=[]), tmp_path / "c", progress=False)
    assert result.layer_budget == given
    with pytest.raises(RelucutError, match="unknown stem_relu 'cut'"):
        SENetConfig(budget=30, stem_relu="cut").check()
    with pytest.raises(RelucutError, match="unknown stem_relu 'cut'"):
        SNLConfig(budget=30, stem_relu="cut").check()
    with pytest.raises(RelucutError, match="unknown gb_drops 'all'"):
        SENetConfig(budget=30, gb_drops="all").check()
    with pytest.raises(RelucutError, match="unknown feature_scale 'double'"):
        SENetConfig(budget=30, feature_scale="double").check()
