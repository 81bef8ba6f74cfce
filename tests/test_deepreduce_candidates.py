"""DeepReDuce candidate generation (§3.5) against the paper's Table 4, without training."""

import pytest

from relucut import ModelSpec, RelucutError, find_sites
from relucut.deepreduce.candidates import (
    Candidate,
    cost_candidate,
    generate_candidates,
    relu_counts,
    stage_blocks_of,
)
from relucut.deepreduce.criticality import criticality_order, criticality_scores, stage_only_plan

STAGES = ("stem", "s1", "s2", "s3", "s4")
CIFAR100_ORDER = ["s1", "s4", "s2", "s3"]  # the paper's ResNet18 / CIFAR-100 order

# DeepReDuce Table 4 (ResNet18, CIFAR-100): (culled, thinned, alpha, rho, one block, #ReLU).
# The table prints the 24.57K row's reshaping under "channel", but 98.3K / 4 = 24.57K is rho = 0.5
# (and the 49.15K row is the alpha = 0.5 one); the counts decide.
TABLE4 = [
    (("s1",), (), 1.0, 1.0, False, 229_376),
    (("s1", "s4"), (), 1.0, 1.0, False, 196_608),
    (("s1",), ("s2", "s3", "s4"), 1.0, 1.0, False, 114_688),
    (("s1",), ("s2", "s3", "s4"), 0.5, 1.0, False, 57_344),
    (("s1", "s4"), ("s2", "s3"), 0.5, 1.0, False, 49_152),
    (("s1",), ("s2", "s3", "s4"), 1.0, 0.5, False, 28_672),
    (("s1", "s4"), ("s2", "s3"), 1.0, 0.5, False, 24_576),
    (("s1",), ("s2", "s3", "s4"), 0.5, 0.5, False, 14_336),
    (("s1", "s4"), ("s2", "s3"), 0.5, 0.5, False, 12_288),
    (("s1",), ("s2", "s3", "s4"), 0.5, 0.5, True, 7_168),
]


def key(c: Candidate):
    return (tuple(s for s in c.culled if s != "stem"), c.thinned, c.alpha, c.rho, c.blocks is not None)


@pytest.fixture(scope="module")
def table4_candidates():
    spec = ModelSpec("resnet18", num_classes=100)
    blocks = stage_blocks_of(find_sites(spec.build(), spec.input_size))
    assert blocks == {"s1": 2, "s2": 2, "s3": 2, "s4": 2}
    cands = generate_candidates(CIFAR100_ORDER, STAGES, blocks, one_block=True)
    return spec, cands


def test_five_per_iteration_never_culling_the_most_critical(table4_candidates):
    _, cands = table4_candidates
    plain = [c for c in cands if c.step != "one-block"]
    assert len(plain) == 5 * (4 - 1)  # five networks per iteration, stages minus one iterations
    assert all("stem" in c.culled for c in cands)
    assert all("s3" not in c.culled for c in cands)  # S3 is the most critical
    culled_sets = [tuple(c.culled) for c in plain[::5]]
    assert culled_sets == [("stem", "s1"), ("stem", "s1", "s4"), ("stem", "s1", "s2", "s4")]
    assert [c.step for c in plain[:5]] == ["culled", "thinned", "alpha", "rho", "alpha+rho"]
    assert len({c.name for c in cands}) == len(cands)


def test_table4_configurations_and_relu_counts(table4_candidates):
    spec, cands = table4_candidates
    by_key = {key(c): c for c in cands}
    chosen = [by_key[row[:5]] for row in TABLE4]
    counts = relu_counts(chosen, spec)
    assert [counts[c.name] for c in chosen] == [row[5] for row in TABLE4]


def test_cost_of_the_smallest_table4_network(table4_candidates):
    spec, cands = table4_candidates
    star = next(c for c in cands if c.step == "one-block")
    cost = cost_candidate(star, spec)
    assert cost.relus == 7_168 and cost.spec.kwargs == {"alpha": 0.5, "rho": 0.5, "blocks": [2, 1, 1, 1],
                                                       "rho_mode": "stride"}
    both = next(c for c in cands if c.step == "alpha+rho" and c.culled == star.culled)  # two blocks per stage
    assert 0 < cost.report.macs < cost_candidate(both, spec).report.macs


def test_one_block_keeps_culled_stages_whole(table4_candidates):
    _, cands = table4_candidates
    star = [c for c in cands if c.step == "one-block"]
    assert [c.blocks for c in star] == [(2, 1, 1, 1), (2, 1, 1, 2), (2, 2, 1, 2)]


def test_other_orders_follow_the_criticality():
    cands = generate_candidates(["s2", "s1", "s4", "s3"], STAGES)
    assert [c.culled for c in cands if c.step == "culled"] == [
        ("stem", "s2"), ("stem", "s1", "s2"), ("stem", "s1", "s2", "s4")]
    assert cands[1].thinned == ("s1", "s3", "s4")


def test_wrong_order_is_a_user_error():
    with pytest.raises(RelucutError, match="does not name this model's stages"):
        generate_candidates(["s1", "s2"], STAGES)


def test_candidate_round_trips():
    for c in generate_candidates(CIFAR100_ORDER, STAGES, {"s1": 2, "s2": 2, "s3": 2, "s4": 2}, one_block=True):
        assert Candidate.from_dict(c.to_dict()) == c


def test_table1_accuracies_give_the_papers_order():
    # Table 1, ResNet18 / CIFAR-100, with KD: S1 < S4 < S2 < S3
    acc = {"s1": 59.85, "s2": 68.79, "s3": 69.9, "s4": 63.16}
    relus = {"s1": 262_144, "s2": 131_072, "s3": 65_536, "s4": 32_768}
    assert criticality_order(criticality_scores(acc, relus), STAGES) == CIFAR100_ORDER


def test_table10_criticality_values():
    # ResNet56 / CIFAR-100, Table 10: C_k = 0.0, 6.0, 7.2
    scores = criticality_scores({"s1": 59.45, "s2": 67.97, "s3": 69.22}, {"s1": 311_300, "s2": 147_500, "s3": 73_730})
    assert scores["s1"] == 0.0
    assert round(scores["s2"], 1) == 6.0 and round(scores["s3"], 1) == 7.2


def test_stage_only_plan_keeps_one_stage():
    spec = ModelSpec("resnet18", num_classes=100)
    sites = find_sites(spec.build(), spec.input_size)
    assert stage_only_plan(sites, "s3").count(sites) == 65_536
    assert stage_only_plan(sites, "s1").count(sites) == 262_144


def test_a_model_without_alpha_and_rho_gets_culling_and_thinning_only(tmp_path):
    from rich.console import Console

    from relucut.deepreduce.search import Search
    from relucut.methods.deepreduce import DeepReDuceConfig
    from relucut.train import TrainConfig

    spec = ModelSpec("fixtures.tv_resnet:tv_resnet18")  # a factory that takes neither alpha nor rho
    search = Search(DeepReDuceConfig(), TrainConfig(model=spec), tmp_path, console=Console(quiet=True))
    stages = search.stages()
    cands = search.candidates(stages)
    assert {c.step for c in cands} == {"culled", "thinned"} and len(cands) == 2 * (len(stages) - 1)
    assert search.smallest_reachable() > 0
