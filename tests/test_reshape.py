"""ReLU equalization: the slides' designs, the order property (checked on real models), CLI errors."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error, run_cli
from relucut import RelucutError, create_model, find_sites
from relucut.deepreshape import describe, parse_order, solve, stage_units
from relucut.deepreshape.equalize import least_critical_heavy
from relucut.models.hybrenet import hrn_name

S3_S2_S4_S1 = (2, 1, 3, 0)


def measured_stage_relus(ratios, blocks, stem_in_s1=False):
    """Independent of the solver's formula: per-stage ReLUs of the built model (m=1, 16x16 input)."""
    n = len(blocks)
    side = 2 ** n
    sites = find_sites(create_model(hrn_name(ratios), base_width=1, blocks=list(blocks)), (3, side, side))
    out = [sum(s.numel for s in sites.in_stage(f"s{i + 1}")) for i in range(n)]
    if stem_in_s1:
        out[0] += sum(s.numel for s in sites.in_stage("stem"))
    return out


def test_solver_finds_the_slides_designs():
    # slides: (5,2) & a>=7; (5,3) & a>=5; (6,2) & a>=6; (7,2) & a>=5
    designs = solve(S3_S2_S4_S1)
    assert [d.ratios for d in designs] == [(5, 5, 3), (5, 7, 2), (6, 6, 2), (7, 5, 2)]
    for d in designs:
        relus = measured_stage_relus(d.ratios, (2, 2, 2, 2))
        assert relus[2] > relus[1] > relus[3] > relus[0]
        smaller = measured_stage_relus((d.ratios[0] - 1, *d.ratios[1:]), (2, 2, 2, 2))
        assert not relus_in_order(smaller, S3_S2_S4_S1)  # alpha is the smallest that works


def test_strict_inequalities_exclude_ties():
    # beta = 4 ties S3 with S2 (a·b/16 = a/4): strict order rejects it for every alpha
    units = stage_units((8, 4, 2), (2, 2, 2, 2))
    assert units[2] == units[1]
    assert all(d.ratios[1] != 4 for d in solve(S3_S2_S4_S1, max_ratio=16))


def test_gamma_one_needs_a_ratio_above_eight():
    # gamma = 1 needs a·b > 64 (S4 > S1) with b < 16 (S2 > S4): out of reach while ratios <= 8
    wide = [d.ratios for d in solve(S3_S2_S4_S1, max_ratio=16)]
    assert (13, 5, 1) in wide and (5, 13, 1) in wide
    assert all(r[0] * r[1] > 64 and max(r) > 8 for r in wide if r[2] == 1)
    assert [d.ratios for d in solve(S3_S2_S4_S1, min_ratio=1)] == [(5, 5, 3), (5, 7, 2), (6, 6, 2), (7, 5, 2)]


def test_stem_inside_s1_changes_the_designs():
    designs = solve(S3_S2_S4_S1, stem_in_s1=True)
    assert (5, 5, 3) not in [d.ratios for d in designs]
    for d in designs:
        assert relus_in_order(measured_stage_relus(d.ratios, (2, 2, 2, 2), stem_in_s1=True), S3_S2_S4_S1)
    # the slides' 5x5x3x: S4 beats S1 only while the stem is left out
    plain, folded = (measured_stage_relus((5, 5, 3), (2, 2, 2, 2), s) for s in (False, True))
    assert plain[3] > plain[0] and folded[3] < folded[0]


def relus_in_order(relus, order):
    return all(relus[a] > relus[b] for a, b in zip(order, order[1:]))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(3, 4),
    max_ratio=st.integers(2, 6),
    stem_in_s1=st.booleans(),
)
def test_every_design_meets_the_order_for_every_pair(data, n, max_ratio, stem_in_s1):
    order = tuple(data.draw(st.permutations(range(n))))
    blocks = tuple(data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)))
    try:
        designs = solve(order, blocks, max_ratio=max_ratio, stem_in_s1=stem_in_s1)
    except RelucutError as exc:
        assert "--max-ratio" in str(exc) and "\n" not in str(exc)
        return
    for d in data.draw(st.lists(st.sampled_from(designs), min_size=1, max_size=3, unique=True)):
        relus = measured_stage_relus(d.ratios, blocks, stem_in_s1)
        rank = {stage: i for i, stage in enumerate(order)}
        for a in range(n):
            for b in range(n):
                if rank[a] < rank[b]:
                    assert relus[a] > relus[b], (order, blocks, d.ratios, relus)
        assert all(1 <= r <= max_ratio for r in d.ratios)


def test_slides_distribution_counts_the_stem_in_stage1():
    expected = {
        ((2, 2, 2), 32): [58.82, 23.53, 11.76, 5.88],
        ((4, 4, 4), 16): [29.41, 23.53, 23.53, 23.53],
        ((3, 7, 2), 16): [31.50, 18.90, 33.07, 16.54],
    }
    for (ratios, m), shares in expected.items():
        row = describe(ratios, m, input_size=(3, 16, 16))  # shares do not depend on the size
        assert list(row["distribution"].values()) == shares
        assert math.isclose(sum(row["relus_by_stage"].values()), row["relus"])


def test_low_budget_allocation_maximizes_the_least_critical_share():
    design = least_critical_heavy(S3_S2_S4_S1)
    assert design.ratios == (2, 5, 2)
    with_stem = stage_units(design.ratios, (2, 2, 2, 2), stem_in_s1=True)
    for other in solve(S3_S2_S4_S1):  # every equalized design gives S1 a smaller share
        units = stage_units(other.ratios, (2, 2, 2, 2), stem_in_s1=True)
        assert units[0] / sum(units) < with_stem[0] / sum(with_stem)


def test_parse_order_errors():
    assert parse_order("S3, s2,s4,s1", 4) == S3_S2_S4_S1
    with pytest.raises(RelucutError, match="unknown stage 'stem'"):
        parse_order("stem,s2,s4,s1", 4)
    with pytest.raises(RelucutError, match="exactly once"):
        parse_order("s3,s2,s4", 4)


def test_cli_reshape_json_and_errors():
    proc = run_cli("reshape", "--order", "s3,s2,s4,s1", "--base-width", "2", "--json", check=True)
    out = json.loads(proc.stdout)
    assert [d["model"] for d in out["designs"]] == ["hrn_5x5x3x", "hrn_5x7x2x", "hrn_6x6x2x", "hrn_7x5x2x"]
    first = out["designs"][0]
    assert first["relus"] == 343_040 // 8 and first["macs"] > 0
    assert math.isclose(sum(first["distribution"].values()), 100, abs_tol=0.05)
    assert_one_line_error(run_cli("reshape", "--order", "s3,s2,s5,s1"), "unknown stage 's5'")
    assert_one_line_error(
        run_cli("reshape", "--order", "s1,s2,s3,s4", "--min-ratio", "5", "--max-ratio", "6"), "--max-ratio"
    )
