"""The pure helpers of bench/deepreduce_cifar10.py (its seed summary and verdicts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "deepreduce_cifar10.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("deepreduce_cifar10_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_spread_is_half_the_range(bench):
    assert bench.mean_spread([40.0, 42.0]) == (41.0, 1.0)
    assert bench.mean_spread([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError):
        bench.mean_spread([])
    assert bench.fmt_ms([1.0, -3.0], signed=True) == "-1.00 ± 2.00"


def test_verdict_needs_every_pair_ahead(bench):
    assert bench.verdict([0.5, 1.2]) == "holds"
    assert bench.verdict([-0.5, 0.0]) == "does not hold"
    assert bench.verdict([-0.5, 2.0]) == "mixed"
    assert bench.verdict([]) == "not measured"


def test_order_from_accuracies_and_rank(bench):
    rows = [{"stage": "s1", "relus": 8192, "acc": 0.40}, {"stage": "s2", "relus": 4096, "acc": 0.43},
            {"stage": "s3", "relus": 2048, "acc": 0.42}, {"stage": "s4", "relus": 1024, "acc": 0.41}]
    order = bench.order_from(rows, "acc", ["stem", "s1", "s2", "s3", "s4"])
    assert order[0] == "s1" and order[-1] == "s2"
    assert bench.least_critical_rank(order) == 1
    assert bench.least_critical_rank(["s4", "s1", "s3", "s2"]) == 2


def test_result_names_keep_seed_zero_where_readers_look(bench):
    class Args:
        name, seed, rho, base_width, criticality_only = None, 0, 0.5, 8, False
    assert bench.result_name(Args) == "deepreduce_cifar10"
    Args.seed = 1
    assert bench.result_name(Args) == "deepreduce_cifar10_seed1"
    Args.seed, Args.rho, Args.base_width, Args.criticality_only = 0, 1.0, 4, True
    assert bench.result_name(Args) == "deepreduce_cifar10_crit32_seed0"


def test_seed_consistency_reads_the_sign_of_each_seed(bench):
    assert bench.seed_consistency([0.5, 0.6]).startswith("ahead on average in every seed")
    assert bench.seed_consistency([-0.5, -0.1]).startswith("behind on average")
    assert "no difference measurable" in bench.seed_consistency([-0.2, 0.4])
