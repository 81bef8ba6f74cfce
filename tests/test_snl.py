"""SNL mask search: exact budgets, frozen masks, the adaptive L1 schedule, export round trip."""

import copy

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, TOTAL_RELUS, tiny_data, trained_base

from relucut import RelucutError, count
from relucut.finegrained import LearnableMaskSite, binarize_to_budget, export, install_mask_sites, load_export
from relucut.finegrained.common import frozen_copy
from relucut.finegrained.snl import snl_finetune, snl_search
from relucut.methods.snl import SNLConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    data = tiny_data()
    return data, trained_base(data)


def _cfg(budget, granularity, **kw):
    base = {"budget": budget, "granularity": granularity, "search_epochs": 1, "finetune_epochs": 1,
            "mask_lr": 0.2, "check_every": 1, "l1_init": 1.0, "l1_growth": 2.0}
    return SNLConfig(**{**base, **kw})


@pytest.mark.parametrize("granularity, budget", [("pixel", 1000), ("channel", 700)])
def test_export_meets_budget_and_masks_stay_frozen(setup, tmp_path, granularity, budget):
    data, base = setup
    model, teacher = copy.deepcopy(base), frozen_copy(base)
    snl_search(model, teacher, data, BASE, _cfg(budget, granularity), tmp_path / "search", progress=False)
    sites = {n: m for n, m in model.named_modules() if isinstance(m, LearnableMaskSite)}
    masks = {n: m.mask.clone() for n, m in sites.items()}
    weights = model.s1[0].conv1.weight.detach().clone()
    snl_finetune(model, teacher, data, BASE, _cfg(budget, granularity), tmp_path / "finetune", progress=False)
    assert all(torch.equal(masks[n], m.mask) for n, m in sites.items())
    assert not torch.equal(weights, model.s1[0].conv1.weight)  # the weights did train
    if granularity == "channel":
        assert all(m.mask.shape[1:] == (1, 1) for m in sites.values())
    summary = export(tmp_path / "export", model, SPEC)
    loaded = load_export(tmp_path / "export")
    relus = count(loaded, SPEC.input_size).relus
    assert summary["relus"] == relus
    assert 0.99 * budget <= relus <= budget
    if granularity == "pixel":
        assert relus == budget
    x = torch.randn(5, *SPEC.input_size)
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_l1_coefficient_grows_while_count_stalls(setup, tmp_path):
    data, base = setup
    model = copy.deepcopy(base)
    # masks cannot move (lr ~0): the count never falls, so every check multiplies the coefficient
    result = snl_search(model, frozen_copy(base), data, BASE,
                        _cfg(500, "pixel", mask_lr=1e-12, check_every=1, l1_init=0.5, l1_growth=2.0), tmp_path,
                        progress=False)
    steps = len(result.history)
    assert steps == 3  # 192 images, batch 64
    assert result.l1_final == pytest.approx(0.5 * 2.0 ** steps)
    assert result.relaxed_relus_at_stop == TOTAL_RELUS - 256  # every ReLU but the stem's, which SNL drops


def test_search_stops_at_budget(setup, tmp_path):
    data, base = setup
    model = copy.deepcopy(base)
    result = snl_search(model, frozen_copy(base), data, BASE,
                        _cfg(1800, "pixel", search_epochs=20, mask_lr=0.5, l1_init=10.0), tmp_path, progress=False)
    assert result.relaxed_relus_at_stop <= 1800
    assert result.search_epochs_run < 20


def test_binarize_is_exact_top_k():
    model = SPEC.build()
    _, masks = install_mask_sites(model, SPEC.input_size, "pixel")
    torch.manual_seed(1)
    for m in masks.values():
        m.scores.data.uniform_()
    chosen = binarize_to_budget(masks, 321)
    assert sum(int(c.sum()) for c in chosen.values()) == 321
    threshold = min(float(masks[n].scores.detach()[c].min()) for n, c in chosen.items() if c.any())
    assert all(float(masks[n].scores.detach()[~c].max()) <= threshold for n, c in chosen.items() if (~c).any())


@pytest.mark.parametrize("budget, needle", [(0, "must be > 0"), (-5, "must be > 0"), (TOTAL_RELUS + 1, "exceeds")])
def test_bad_budgets(budget, needle):
    model = SPEC.build()
    _, masks = install_mask_sites(model, SPEC.input_size, "pixel")
    with pytest.raises(RelucutError, match=needle):
        binarize_to_budget(masks, budget)


def test_relaxed_site_interpolates_relu_and_identity():
    site = LearnableMaskSite((2, 1, 3), "pixel")
    x = torch.tensor([[[[-1.0, 2.0, -3.0]], [[4.0, -5.0, 6.0]]]])
    site.scores.data.fill_(0.25)
    assert torch.allclose(site(x), 0.25 * torch.relu(x) + 0.75 * x)
    site.freeze(torch.tensor([[[True, False, True]], [[False, False, True]]]))
    assert site.active_relus((2, 1, 3)) == 3
    assert torch.equal(site(x), torch.tensor([[[[0.0, 2.0, 0.0]], [[4.0, -5.0, 6.0]]]]))


def test_binarize_breaks_ties_by_relu_effect_not_site_order():
    model = SPEC.build()
    _, masks = install_mask_sites(model, SPEC.input_size, "pixel")
    for m in masks.values():
        m.scores.data.zero_()  # every score clamped to 0, as when the search stops below the budget
    names = list(masks)
    effect = {n: torch.zeros_like(m.scores) for n, m in masks.items()}
    effect[names[-1]].fill_(1.0)  # only the last site (s4) changes its input
    chosen = binarize_to_budget(masks, 20, tiebreak=effect)  # the last site has 32 entries
    assert int(chosen[names[-1]].sum()) == 20
    assert int(chosen[names[0]].sum()) == 0  # not the stem, which a stable sort by position would pick
