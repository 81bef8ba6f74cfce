"""SENet stage 1's allocation shape and gated branching's ReLU rule, against the authors' numbers.

RLNet's published per-layer lists (tests/fixtures/rlnet_allocations.py) put ResNet18's s1 at about
0.2x the average density and s4 at about 6.5x; allocating layer *counts* in proportion to the
ReLU sensitivity (SENet's normalized sensitivity) has that shape, allocating *densities* does not.
"""

import pytest
import torch
from fixtures.finegrained import SPEC, tiny_data, trained_base
from fixtures.rlnet_allocations import RLNET_RESNET18, SHALLOW_TABLE1

from relucut import RelucutError, find_sites
from relucut.finegrained.gated import relus_after_gb
from relucut.finegrained.sensitivity import layer_budgets, relu_sensitivity
from relucut.models.registry import ModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET18_32 = ModelSpec("resnet18", num_classes=10)  # width 64, 32x32: 557,056 ReLUs, 491,520 w/o the stem


def _stage_density(sites, budget: dict[str, int]) -> dict[str, float]:
    kept, size = {}, {}
    for s in sites:
        kept[s.stage] = kept.get(s.stage, 0) + budget[s.name]
        size[s.stage] = size.get(s.stage, 0) + s.numel
    return {st: kept[st] / size[st] for st in kept}


@pytest.fixture(scope="module")
def full_resnet18():
    model = RESNET18_32.build()
    return model, find_sites(model, RESNET18_32.input_size)


def _rlnet_budget(sites, name: str) -> dict[str, int]:
    densities = RLNET_RESNET18[name]
    assert len(densities) == len(sites)
    return {s.name: round(d * s.numel) for d, s in zip(densities, sites)}


def test_rlnet_lists_sum_to_their_budgets_on_the_zoo_resnet18(full_resnet18):
    _, sites = full_resnet18
    assert sum(s.numel for s in sites) == 557_056
    assert sum(s.numel for s in sites if s.stage != "stem") == 491_520
    sums = {name: sum(_rlnet_budget(sites, name).values()) for name in RLNET_RESNET18}
    assert sums == {"25k": 25_330, "50k": 49_968, "100k": 99_987, "82k": 82_657}
    # the shape the count rule is after: s1 far below the average density, s4 far above
    avg = sums["25k"] / 557_056
    dens = _stage_density(sites, _rlnet_budget(sites, "25k"))
    assert dens["s1"] / avg == pytest.approx(0.225, abs=0.01)
    assert dens["s4"] / avg == pytest.approx(6.48, abs=0.05)


def test_count_allocation_is_steep_on_a_trained_base_and_density_allocation_flat():
    base = trained_base(tiny_data())
    sites = find_sites(base, SPEC.input_size)
    sens = relu_sensitivity(base, 0.1)
    budget = 200  # 9 % of 2,176 ReLUs
    avg = budget / sum(s.numel for s in sites)
    by_count = _stage_density(sites, layer_budgets(sites, sens, budget, "count"))
    by_density = _stage_density(sites, layer_budgets(sites, sens, budget, "density"))
    assert by_count["s1"] < by_count["s4"]
    assert by_count["s1"] < 0.5 * avg and by_count["s4"] > 4 * avg  # RLNet's 25k list: 0.22x and 6.5x
    assert by_density["s1"] > 0.6 * avg and by_density["s4"] < 2.5 * avg
    assert by_count["s4"] / by_count["s1"] > 3 * by_density["s4"] / by_density["s1"]
    with pytest.raises(RelucutError, match="unknown allocation 'flat'"):
        layer_budgets(sites, sens, budget, "flat")


def test_count_allocation_caps_full_layers_and_shares_their_excess():
    base = trained_base(tiny_data())
    sites = find_sites(base, SPEC.input_size)
    alloc = layer_budgets(sites, relu_sensitivity(base, 0.1), 900, "count")
    assert sum(alloc.values()) == 900 and all(0 <= alloc[s.name] <= s.numel for s in sites)
    assert all(alloc[s.name] == s.numel for s in sites if s.stage == "s4")  # capped, like RLNet's 100k list


def _rlnet_fractions(sites, name: str) -> dict[str, float]:
    return {s.name: d for d, s in zip(RLNET_RESNET18[name], sites)}


# shallow blocks below d_th, from the published fractions; two of them sit exactly at d_th and stay
# (82k: s3.0.relu1 at 0.1, so depth 14 where Table 1 says 13; 50k: s2's at 0.05, depth 14 as in Table 1)
SHALLOW = {"25k": ["s1.0", "s1.1", "s2.0", "s2.1"], "50k": ["s1.0", "s1.1"], "82k": ["s2.0", "s2.1"]}


@pytest.mark.parametrize("row", SHALLOW_TABLE1, ids=[r["list"] for r in SHALLOW_TABLE1])
def test_gb_on_rlnet_lists_shallow_blocks(full_resnet18, row):
    model, sites = full_resnet18
    fractions = _rlnet_fractions(sites, row["list"])
    inner, blocks, fading = relus_after_gb(sites, fractions, row["dth"], model, "inner")
    both, blocks_b, fading_b = relus_after_gb(sites, fractions, row["dth"], model, "inner+post-add")
    assert blocks == blocks_b == SHALLOW[row["list"]] and fading == []
    assert fading_b == [f"{b}.relu2" for b in blocks]  # these lists' post-add ReLUs are below d_th too
    if row["list"] != "82k":
        assert row["depth"] - len(blocks) == row["gb_depth"]  # one conv fewer per shallow block, as Table 1
    assert both < inner < sum(fractions[s.name] * s.numel for s in sites)


def test_gb_kept_fractions_at_table1_operating_points(full_resnet18):
    model, sites = full_resnet18
    kept = {}
    for row in SHALLOW_TABLE1:
        fractions = _rlnet_fractions(sites, row["list"])
        kept[row["list"]] = tuple(round(relus_after_gb(sites, fractions, row["dth"], model, drops)[0])
                                  for drops in ("inner", "inner+post-add"))
    # by hand: 25k at 0.05 drops s1.{0,1}.relu1 (0.01 x 65,536 each), s2.{0,1}.relu1 (0.027, 0.04 x 32,768);
    # the post-add rule also s1.{0,1}.relu2 (0.01, 0.011 x 65,536) and s2.{0,1}.relu2 (0.038, 0.042 x 32,768)
    assert kept["25k"] == (21_823, 17_826)
    assert kept["25k"][0] / 25_330 == pytest.approx(0.862, abs=0.001)  # the paper: 21.1 of 24.9 = 0.847
    assert kept["25k"][1] / 25_330 == pytest.approx(0.704, abs=0.001)
    assert kept["50k"] == (46_694, 43_090)  # of 49,971; the paper: 47.4 of 49.6 = 0.956
    assert kept["82k"] == (80_691, 78_725)  # of 82,657; the paper: 76.8 of 82 = 0.937


def test_feature_scale_full_is_twice_half():
    from relucut.finegrained.losses import LossWeights, combined_loss

    torch.manual_seed(0)
    z, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    maps_s, maps_t = [torch.randn(4, 3, 5, 5)], [torch.randn(4, 3, 5, 5)]
    plain = combined_loss(z, t, y, weights=LossWeights(feature_weight=0.0))
    half = combined_loss(z, t, y, maps_s, maps_t, LossWeights(feature_weight=1000.0)) - plain
    full_weights = LossWeights(feature_weight=1000.0, feature_scale="full")
    full = combined_loss(z, t, y, maps_s, maps_t, full_weights) - plain
    assert float(half) > 0 and float(full) == pytest.approx(2 * float(half), rel=1e-5)
