"""Per-element kinds priced by a profile's own terms, or flagged: unpriced kinds with their elements, the
lower bound, the priced share, the one-line warning, and the fit of kind terms to measurements."""

import json
from dataclasses import replace

import numpy as np
import pytest

from relucut.errors import RelucutError
from relucut.pi import Workload, estimate, get_profile, load_profile, unpriced_line
from relucut.pi.calibrate import calibrate_kinds, measurement_row

BASE = Workload(relus=10_000, relu_layers=4, macs=1_000_000, truncations=5_000, linear_layers=3)
GELU = {"online_s": 4e-6, "online_bytes": 300.0, "layer_online_s": 0.01, "layer_online_bytes": 2e5,
        "rounds_per_layer": 30.0, "offline_s": 1e-6, "offline_bytes": 50.0}


def _with(profile: str, **costs):
    return replace(get_profile(profile), kind_costs=costs)


def test_each_kind_term_moves_the_estimate_by_its_constant():
    work = replace(BASE, smooth={"gelu": 1000}, smooth_layers={"gelu": 2})
    priced = _with("spu-cheetah", gelu=GELU)
    without = estimate(BASE, priced)
    est = estimate(work, priced)
    assert est.online_compute_s - without.online_compute_s == pytest.approx(1000 * 4e-6 + 2 * 0.01)
    assert est.online_bytes - without.online_bytes == pytest.approx(1000 * 300.0 + 2 * 2e5)
    assert est.online_rounds - without.online_rounds == pytest.approx(2 * 30.0)
    assert est.offline_bytes - without.offline_bytes == pytest.approx(1000 * 50.0)
    assert est.unpriced == {} and not est.lower_bound and est.priced_share == 1.0
    # compute per element scales with threads, the per-layer time does not
    four = estimate(work, priced, threads=4)
    assert est.online_compute_s - four.online_compute_s == pytest.approx(
        (est.online_compute_s - 2 * 0.01 - 4 * priced.layer_online_s - 3 * priced.linear_layer_online_s) * 0.75)


def test_unpriced_kinds_are_named_with_their_elements_and_mark_a_lower_bound():
    work = replace(BASE, smooth={"gelu": 1000, "softmax": 500, "matmul": 10**6},
                   smooth_layers={"gelu": 1, "softmax": 1, "matmul": 2})
    est = estimate(work, _with("delphi", gelu=GELU))
    assert est.unpriced == {"softmax": 500, "matmul": 10**6} and est.unpriced_kinds == ["softmax", "matmul"]
    assert est.lower_bound and est.to_dict()["lower_bound"] is True
    # 10,000 comparisons + 1,000 GELU priced of 11,500 elements (matmul MACs aside)
    assert est.priced_share == pytest.approx(11_000 / 11_500)
    assert estimate(work, "delphi").online_s < est.online_s  # the GELU terms add, the rest is left out
    line = est.unpriced_line()
    assert line == unpriced_line(est.unpriced, "delphi") and "\n" not in line
    assert "delphi estimate is a lower bound" in line and "Softmax 500" in line and "matmul MACs 1,000,000" in line
    assert unpriced_line({}, "delphi") is None


def test_comparison_profiles_price_hardsigmoid_as_two_comparisons():
    work = replace(BASE, smooth={"hardsigmoid": 100}, smooth_layers={"hardsigmoid": 1})
    for name in ("delphi", "delphi-slides", "sci", "cheetah"):
        est = estimate(work, name)
        assert est.relus == BASE.relus + 200 and est.relu_layers == BASE.relu_layers + 1 and not est.lower_bound


def test_profile_files_add_kind_costs_and_reject_unknown_ones(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('base = "delphi"\n[kind_costs.gelu]\nonline_s = 4e-6\nonline_bytes = 300\n')
    prof = load_profile(path)
    assert prof.kind_costs["gelu"] == {"online_s": 4e-6, "online_bytes": 300.0}
    work = replace(BASE, smooth={"gelu": 1000}, smooth_layers={"gelu": 1})
    assert estimate(work, prof).online_bytes == pytest.approx(estimate(BASE, "delphi").online_bytes + 300_000)
    spu = tmp_path / "spu.json"  # a file's kinds join the base profile's
    spu.write_text(json.dumps({"base": "spu-cheetah", "kind_costs": {"erf": {"online_s": 1e-6}}}))
    assert set(load_profile(spu).kind_costs) == {*get_profile("spu-cheetah").kind_costs, "erf"}
    for bad, message in (({"swish": {"online_s": 1}}, "unknown kind 'swish'"),
                         ({"gelu": {"online_sec": 1}}, "unknown term"), ({"gelu": {"online_s": -1}}, ">= 0"),
                         ({"gelu": 3}, "must be a table")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"kind_costs": bad}))
        with pytest.raises(RelucutError, match=message):
            load_profile(path)


def _synthetic(profile, costs: dict, n: int = 16) -> list[dict]:
    rng = np.random.default_rng(1)
    truth = replace(profile, kind_costs=costs)
    rows = []
    for i in range(n):
        kind = list(costs)[i % len(costs)]
        work = replace(BASE, relus=int(rng.integers(0, 3000)), macs=int(rng.integers(10**5, 10**6)),
                       truncations=int(rng.integers(1000, 9000)), smooth={kind: int(rng.integers(1000, 20000))},
                       smooth_layers={kind: int(rng.integers(1, 4))})
        est = estimate(work, truth, threads=truth.ref_threads)
        rows.append({**measurement_row(work), "online_s": est.online_compute_s, "online_bytes": est.online_bytes,
                     "rounds": est.online_rounds})
    return rows


def test_calibrate_kinds_recovers_kind_terms_and_keeps_the_rest():
    spu = replace(get_profile("spu-cheetah"), kind_costs={})
    costs = {"gelu": {"online_s": 4e-6, "layer_online_s": 0.01, "online_bytes": 300.0, "layer_online_bytes": 1e5,
                      "rounds_per_layer": 30.0},
             "softmax": {"online_s": 9e-6, "layer_online_s": 0.02, "online_bytes": 700.0, "layer_online_bytes": 0.0,
                         "rounds_per_layer": 60.0}}
    fitted, fit = calibrate_kinds(_synthetic(spu, costs), spu, "kinds")
    for kind, terms in costs.items():
        for term, value in terms.items():
            assert fitted.kind_costs[kind][term] == pytest.approx(value, rel=1e-6, abs=1e-6), (kind, term)
    assert fitted.relu_online_s == spu.relu_online_s and fitted.name == "kinds"
    assert fit["kinds"] == ["gelu", "softmax"] and fit["time_r2"] == pytest.approx(1.0)
    with pytest.raises(RelucutError, match="nothing to fit"):
        calibrate_kinds([measurement_row(BASE) | {"online_s": 1, "online_bytes": 1}] * 3, spu)


def test_weight_macs_exclude_activation_products():
    from fixtures.attention_nets import ExplicitAttention

    from relucut import count

    report = count(ExplicitAttention(8), (5, 8))
    work = Workload.of(report)
    assert work.macs == report.macs - 2 * 5 * 5 * 8 and work.smooth["matmul"] == 2 * 5 * 5 * 8


def test_shipped_spu_cheetah_kind_costs_are_the_bench_fit():
    """The shipped kind terms carry bench/spu_kinds.py's fit (3 significant digits)."""
    from pathlib import Path

    fitted = json.loads((Path(__file__).parents[1] / "bench/results/spu_kinds.json").read_text())["kind_costs"]
    shipped = get_profile("spu-cheetah").kind_costs
    assert set(shipped) == set(fitted) | {"poly2"}  # poly2: bench/spu_poly.py's fit (tests/test_pi_poly.py)
    for kind, terms in fitted.items():
        for term, value in terms.items():
            assert shipped[kind][term] == pytest.approx(value, rel=5e-3, abs=1e-3), (kind, term)
