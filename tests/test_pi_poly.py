"""Polynomial positions (poly2) priced honestly: each engine's poly cost moves the estimate by its
constant, engines without a public price say so in one line, a latency budget pays for them, and the
SPU converter carries them (plaintext JAX and secure outputs equal PyTorch)."""

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from relucut import ReLUPlan, count, find_sites
from relucut.frontier_search import FrontierConfig
from relucut.frontier_search.pricing import mask_budgets, masked, price, relu_budget_for_latency
from relucut.models.registry import ModelSpec
from relucut.pi import Workload, estimate, get_profile
from relucut.pi.graph_export import export_graph
from relucut.plan import apply_plan

BASE = Workload(relus=10_000, relu_layers=4, macs=1_000_000, truncations=5_000, linear_layers=3)
POLY = replace(BASE, smooth={"poly2": 20_000}, smooth_layers={"poly2": 3})
BENCH = Path(__file__).parents[1] / "bench" / "results" / "spu_poly.json"


@pytest.mark.parametrize("engine", ["delphi", "delphi-slides"])
def test_delphi_prices_a_polynomial_position_as_its_published_quad(engine):
    without, est = estimate(BASE, engine), estimate(POLY, engine)
    # the slides' DELPHI table: a quad costs 6 us and 152 B preprocessing, 0.03 us and 8 B online
    assert est.offline_s - without.offline_s == pytest.approx(20_000 * 6e-6)
    assert est.offline_bytes - without.offline_bytes == pytest.approx(20_000 * 152)
    assert est.online_bytes - without.online_bytes == pytest.approx(20_000 * 8)
    assert est.online_compute_s - without.online_compute_s == pytest.approx(20_000 * 0.03e-6)
    assert est.online_rounds - without.online_rounds == pytest.approx(3)  # a Beaver opening per layer
    assert not est.lower_bound and est.unpriced == {}
    # a quad is far cheaper than the ReLU it replaces: 10,000 ReLUs against 10,000 squares
    relus = estimate(replace(BASE, relus=20_000), engine)
    assert est.online_s < relus.online_s and est.offline_s < relus.offline_s
    assert "Quad" in get_profile(engine).sources["kind_costs"]


@pytest.mark.parametrize("engine", ["sci", "cheetah"])
def test_engines_without_a_public_price_flag_polynomials_in_one_line(engine):
    est = estimate(POLY, engine)
    assert est.unpriced == {"poly2": 20_000} and est.lower_bound
    assert est.online_s == estimate(BASE, engine).online_s  # left out, not guessed
    line = est.unpriced_line()
    assert "\n" not in line and f"{engine} estimate is a lower bound" in line and "polynomial" in line
    assert "poly2" in get_profile(engine).sources["kind_costs"]


def test_spu_cheetah_prices_polynomials_by_the_terms_bench_spu_poly_fitted():
    costs = get_profile("spu-cheetah").kind_costs["poly2"]
    fitted = json.loads(BENCH.read_text())["kind_costs"]["poly2"]
    for term, value in fitted.items():  # shipped at 3 significant digits
        assert costs[term] == pytest.approx(value, rel=5e-3, abs=1e-12), term  # 0 stays 0
    without, est = estimate(BASE, "spu-cheetah"), estimate(POLY, "spu-cheetah")
    assert est.online_compute_s - without.online_compute_s == pytest.approx(
        20_000 * costs["online_s"] + 3 * costs["layer_online_s"])
    assert est.online_bytes - without.online_bytes == pytest.approx(
        20_000 * costs["online_bytes"] + 3 * costs.get("layer_online_bytes", 0.0))
    assert not est.lower_bound


def test_the_fitted_price_holds_out_of_sample():
    result = json.loads(BENCH.read_text())
    checked = [r for r in result["rows"] if r["set"] == "out-of-sample"]
    assert len(checked) >= 3 and all(r["matches_pytorch"] for r in result["rows"])
    for row in checked:
        assert abs(row["fit_time_ratio"] - 1) <= result["target"], row["network"]
        assert abs(row["fit_bytes_ratio"] - 1) <= result["target"], row["network"]


SPEC = ModelSpec("resnet18", 10, 3, 16, {"base_width": 4})


def test_a_latency_budget_pays_for_the_polynomial_positions():
    full = count(SPEC.build(), SPEC.input_size)
    config = FrontierConfig(latency_budgets=[1.0], engine="delphi")
    work = Workload.of(full)
    latency = price(masked(work, 3000, full.relus, len(full.sites)), config).online_s
    identity = relu_budget_for_latency(full, latency, config)
    poly = relu_budget_for_latency(full, latency, config, "poly2")
    assert identity >= 3000 and poly < identity  # the squares take some of the time
    cost = lambda r: price(masked(work, r, full.relus, len(full.sites), "poly2"), config).online_s
    assert cost(poly) <= latency < cost(poly + 1)  # the most ReLUs that fit, polynomials paid
    assert masked(work, poly, full.relus, len(full.sites), "poly2").smooth["poly2"] == full.relus - poly
    fr = SimpleNamespace(latency=True, full=full, config=FrontierConfig(latency_budgets=[latency], engine="delphi"),
                         mask_budgets=lambda: [identity])
    assert mask_budgets(fr, "identity") == [identity] and mask_budgets(fr, "poly2") == [poly]
    relu_frontier = SimpleNamespace(latency=False, mask_budgets=lambda: [1000, 3000])
    assert mask_budgets(relu_frontier, "poly2") == [1000, 3000]  # at ReLU budgets the budgets themselves


def _poly_network():
    torch.manual_seed(0)
    model = SPEC.build().eval()
    sites = find_sites(model, SPEC.input_size)
    gen = torch.Generator().manual_seed(1)
    plan = ReLUPlan()
    for i, s in enumerate(sites):
        coef = (torch.rand(3, s.shape[0], generator=gen) - 0.5) * 0.2 + torch.tensor([[0.0], [1.0], [0.0]])
        if i % 2:
            plan.set_mask(s.name, torch.rand(s.shape, generator=gen) < 0.2, coef)
        else:
            plan.drop(s.name, coef)
    return apply_plan(model, plan, SPEC.input_size).eval()


def test_the_converter_carries_polynomial_sites():
    model = _poly_network()
    graph = export_graph(model, SPEC.input_size)
    ops = [op["op"] for op in graph.ops]
    partial = [op for op in graph.ops if op["op"] == "partial_relu"]
    assert "poly2" in ops and partial and all(op.get("rest") for op in partial)
    report = count(model, SPEC.input_size)
    assert graph.relus == report.relus
    rest = sum(graph.arrays[op["rest"]].size for op in partial)
    whole = sum(int(np.prod(op["shape"])) for op in graph.ops if op["op"] == "poly2")
    assert rest + whole == report.nonlinear_by_kind["poly2"]  # every polynomial position, no more


@pytest.mark.spu
def test_polynomial_networks_run_under_spu_as_in_pytorch():
    from relucut.pi.measure import measure, plain_outputs

    model = _poly_network()
    (ref, plain), = plain_outputs([model], SPEC.input_size)
    assert np.abs(ref - plain).max() <= 1e-4
    m = measure(model, SPEC.input_size, runs=2)
    assert m.matches and m.kinds == {"poly2": count(model, SPEC.input_size).nonlinear_by_kind["poly2"]}
