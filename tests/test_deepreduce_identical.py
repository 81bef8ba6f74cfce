"""DeepReDuce trains no network twice, and says when its ranking is noise (issue 13, item 12)."""

import pytest

from relucut.deepreduce.candidates import drop_identical, generate_candidates, relu_counts, stage_blocks_of
from relucut.models.registry import ModelSpec
from relucut.sites import find_sites


def _candidates(spec, one_block):
    sites = find_sites(spec.build(), spec.input_size)
    return generate_candidates(["s1", "s2", "s3", "s4"], sites.stage_names, stage_blocks_of(sites),
                               one_block=one_block)


def test_thinned_resnet6_candidates_equal_their_culled_parents_and_are_dropped():
    # one ReLU layer per stage: thinning keeps a stage's last layer, so it drops nothing
    spec = ModelSpec("resnet6", 10, 1, 8, {"base_width": 4})
    cands = _candidates(spec, one_block=False)
    kept = drop_identical(cands, spec)
    dropped = [c for c in cands if c not in kept]
    assert [c.step for c in dropped] == ["thinned"] * 3
    by_name = {c.name: c for c in cands}
    counts = relu_counts(cands, spec)
    for cand in dropped:  # each equals the culled network of its iteration, which stays
        parent = next(c for c in kept if c.iteration == cand.iteration and c.step == "culled")
        assert counts[cand.name] == counts[parent.name] and by_name[parent.name] in kept
    assert len({c.name for c in kept}) == len(kept) == len(cands) - 3


def test_distinct_networks_are_all_kept_in_order():
    spec = ModelSpec("resnet18", 10, 1, 8, {"base_width": 4})
    cands = _candidates(spec, one_block=True)
    assert drop_identical(cands, spec) == cands


@pytest.mark.parametrize("accuracies, warned", [([0.09, 0.11, None], True), ([0.1, 0.62], False), ([None], False)])
def test_one_warning_line_when_every_network_is_at_chance(accuracies, warned):
    from relucut.deepreduce.frontier import chance_warning

    text = chance_warning(accuracies, 10, "the criticality order is")
    assert ("\n" not in text and "at chance accuracy" in text and "noise" in text) if warned else text is None
