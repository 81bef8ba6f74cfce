"""The cross-method frontier (`relucut frontier`, `relucut.frontier`): the undominated set, budgets
that hold, exports that are the priced networks, reuse on a rerun, and refusals before any work."""

import dataclasses
import json
import random

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from fixtures.frontier import BUDGETS, ENTRIES, SPEC, frontier_base, frontier_config, frontier_teacher

from relucut import ModelSpec, count
from relucut.frontier_search import FrontierConfig, FrontierPoint, frontier, undominated
from relucut.frontier_search.pricing import price, relu_budget_for_latency
from relucut.methods import frontier_entries
from relucut.methods.snl import SNLConfig
from relucut.pareto import best_within, mark

# -- the undominated set -------------------------------------------------------------------------


def _point(i, relus, acc, online_s=0.0):
    return FrontierPoint(method="m", name=f"p{i}", plan="", relus=relus, relu_layers=1, macs=1, conv_depth=1,
                         val_acc=acc, run_dir="", export_dir="", online_s=online_s)


def _dominated(p, others, key):
    return any(q.cost(key) <= p.cost(key) and q.val_acc >= p.val_acc
               and (q.cost(key) < p.cost(key) or q.val_acc > p.val_acc) for q in others if q is not p)


@pytest.mark.parametrize("key", ["relus", "online_s"])
def test_the_combined_frontier_is_exactly_the_undominated_set(key):
    rng = random.Random(0)
    for trial in range(300):
        # few distinct values, so ties in cost and in accuracy are common
        pts = [_point(i, rng.randrange(1, 8) * 100, rng.randrange(0, 6) / 5, rng.randrange(1, 8) / 10)
               for i in range(rng.randrange(1, 12))]
        front = mark(pts, key)
        expected = {p.name for p in pts if not _dominated(p, pts, key)}
        assert {p.name for p in front} == expected, trial
        assert {p.name for p in pts if p.on_frontier} == expected
        costs = [p.cost(key) for p in front]
        assert costs == sorted(costs, reverse=True)  # most expensive first


def test_an_engine_without_a_price_for_a_kind_says_so_in_one_line():
    from relucut.frontier_search.points import unpriced_line

    priced = [_point(0, 900, 0.9), _point(1, 500, 0.7)]
    assert unpriced_line(priced, "delphi") is None
    priced[0].unpriced, priced[1].unpriced = {"silu": 4096, "gelu": 10}, {"silu": 2048}
    line = unpriced_line(priced, "delphi")
    assert "\n" not in line and "delphi estimate is a lower bound" in line
    assert "4,096" in line and "2,048" not in line and "10" in line  # each kind at its most elements


def test_best_within_a_budget_is_the_most_accurate_that_fits():
    pts = [_point(0, 900, 0.9), _point(1, 500, 0.7), _point(2, 300, 0.7), _point(3, 100, 0.2)]
    assert best_within(pts, 1000).name == "p0"
    assert best_within(pts, 899).name == "p2"  # equal accuracy: the cheaper one
    assert best_within(pts, 99) is None


def test_a_latency_budget_becomes_the_most_relus_that_fit(one_thread):
    spec = ModelSpec("resnet18", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 2})
    report = count(spec.build(), spec.input_size)
    config = FrontierConfig(latency_budgets=[1.0], engine="delphi")
    full = price(report, config).online_s
    floor = relu_budget_for_latency(report, full, config)
    assert floor == report.relus  # the full network meets its own latency
    from relucut.pi import Workload

    half = (full + price(dataclasses.replace(Workload.of(report), relus=1), config).online_s) / 2
    relus = relu_budget_for_latency(report, half, config)
    work = Workload.of(report)
    assert 1 <= relus < report.relus
    assert price(dataclasses.replace(work, relus=relus), config).online_s <= half
    assert price(dataclasses.replace(work, relus=relus + 1), config).online_s > half
    assert relu_budget_for_latency(report, 1e-9, config) is None


# -- one search on digits, every method ---------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from relucut.train import load_data

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("frontier") / "run"
    base = frontier_base()
    data = load_data(base)
    result = frontier(SPEC, frontier_config(), data=data, out=out, train=base, teacher=frontier_teacher(), progress=False)
    return result, out, base, data


@pytest.mark.slow
def test_every_method_gives_points_and_each_budget_a_pick(searched):
    result, out, _, _ = searched
    methods = {p.method for p in result.points}
    assert methods == {"teacher", *ENTRIES} and set(ENTRIES) <= set(frontier_entries())
    for budget in BUDGETS:
        pick = result.picks[budget]
        assert pick is not None and pick.relus <= budget
        fits = [p for p in result.points if p.relus <= budget]
        assert pick.val_acc == max(p.val_acc for p in fits)
        assert pick.test_acc is not None and budget in pick.chosen_for
    chosen = {p.name for p in result.picks.values()}
    assert all(p.test_acc is None for p in result.points if p.name not in chosen)  # test read once per pick
    assert {p.name for p in result.frontier} == {p.name for p in undominated(result.points)}


@pytest.mark.slow
def test_masked_networks_meet_their_budget_exactly_and_shallow_ones_within_it(searched):
    result, _, _, _ = searched
    for p in result.points:
        if p.method in ("snl", "snl-channel", "senet"):
            assert p.relus == p.budget, p.name
        if p.method == "senet-shallow":
            assert p.relus <= p.budget, p.name
    budgets = {p.budget for p in result.points if p.method == "snl"}
    assert budgets == set(BUDGETS)


@pytest.mark.slow
def test_each_point_is_its_export_counted_and_priced(searched):
    from relucut.export import load_export

    result, out, _, _ = searched
    for p in result.points:
        model = load_export(out / p.export_dir)
        report = count(model, SPEC.input_size if p.method != "deepreshape" else model.relucut_recipe.model.input_size)
        assert report.relus == p.relus and report.macs == p.macs, p.name
        assert price(report, frontier_config()).online_s == pytest.approx(p.online_s), p.name
        if p.on_frontier or p.chosen_for:  # the networks a user ships have their ONNX file
            assert (out / p.export_dir / "model.onnx").is_file(), p.name


@pytest.mark.slow
def test_exports_equal_the_trained_networks(searched):
    from relucut.export import load_export
    from relucut.train import load_checkpoint_model

    result, out, _, _ = searched
    x = torch.randn(4, *SPEC.input_size)
    engine_runs = [p for p in result.points if p.method in ("teacher", "deepreduce", "deepreshape")]
    assert len(engine_runs) >= 3
    for p in engine_runs:
        trained = load_checkpoint_model(frontier_teacher() if p.method == "teacher" else out / p.run_dir)  # given, or trained
        exported = load_export(out / p.export_dir)
        with torch.no_grad():
            assert torch.allclose(trained(x), exported(x), atol=1e-4), p.name


@pytest.mark.slow
def test_the_picks_onnx_files_compute_what_torch_does(searched):
    import numpy as np
    import onnxruntime

    from relucut.export import load_export

    result, out, _, _ = searched
    x = torch.randn(4, *SPEC.input_size)
    for p in {p.name: p for p in result.picks.values()}.values():
        session = onnxruntime.InferenceSession(str(out / p.export_dir / "model.onnx"))
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = load_export(out / p.export_dir)(x).numpy()
        assert np.allclose(got, want, atol=1e-4), p.name


@pytest.mark.slow
def test_the_files_hold_the_same_frontier(searched):
    result, out, _, _ = searched
    doc = json.loads((out / "frontier.json").read_text())
    assert doc["cost"] == "relus" and doc["engine"] == "delphi" and doc["budgets"] == BUDGETS
    rows = [FrontierPoint.from_dict(r) for r in doc["points"]]
    assert {r.name for r in rows if r.on_frontier} == {p.name for p in undominated(rows)}
    assert all(0.0 <= r.val_acc <= 1.0 for r in rows)  # fractions, as every results file
    csv_lines = (out / "frontier.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows)
    md = (out / "frontier.md").read_text()
    for p in result.frontier:
        assert f"relucut pi estimate {p.export_dir}" in md
    png = (out / "frontier.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


@pytest.mark.slow
def test_a_rerun_with_more_budgets_and_another_engine_reuses_every_run(searched):
    _, out, base, data = searched
    finals = sorted(out.rglob("final.json"))
    before = {f: f.stat().st_mtime_ns for f in finals}
    again = frontier(SPEC, frontier_config(engine="cheetah", methods=["deepreduce", "snl"]), data=data, out=out,
                     train=base, teacher=frontier_teacher(), progress=False)
    assert {p.method for p in again.points} == {"teacher", "deepreduce", "snl"}
    doc = json.loads((out / "frontier.json").read_text())
    assert doc["engine"] == "cheetah" and doc["methods"] == ["deepreduce", "snl"]
    # a smaller budget: DeepReDuce's networks under it were trained for the larger one
    smaller = frontier(SPEC, frontier_config(budgets=[400, 200], methods=["deepreduce"]), data=data, out=out, train=base,
                       teacher=frontier_teacher(), progress=False)
    assert {f: f.stat().st_mtime_ns for f in finals} == before  # nothing trained again
    assert sorted(out.rglob("final.json")) == finals
    assert smaller.picks[200] is not None and smaller.picks[200].relus <= 200


@pytest.mark.slow
def test_other_training_settings_are_refused_in_the_same_folder(searched):
    from relucut.errors import RelucutError

    _, out, base, data = searched
    with pytest.raises(RelucutError, match="different"):
        frontier(SPEC, frontier_config(), data=data, out=out, train=dataclasses.replace(base, lr=0.2), teacher=frontier_teacher(),
                 progress=False)


# -- the command line: refusals before anything is written ---------------------------------------

CLI = ["frontier", "resnet18", "--dataset", "digits", "--base-width", "4", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("args, needle", [
    (["--budget", "1k", "--methods", "snl,magic"], "unknown method(s) magic"),
    (["--budget", ""], "--budget is empty"),
    ([], "give budgets"),
    (["--budget", "1k", "--engine", "quantum"], "unknown engine 'quantum'"),
    (["--budget", "1k,3k", "--objective", "latency"], "--budget takes a number with a unit"),
    (["--budget", "1k", "--rtt", "10"], "--rtt takes a number with a unit"),
    (["--latency-budget", "1us"], "latency budget of 1e-06 s"),
    (["--latency-budget", "fast"], "--latency-budget takes a number with a unit"),
    (["--budget", "1k", "--measure"], "SPU environment is missing"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    proc = run_cli(*CLI, *args, "--out", out, env={"RELUCUT_SPU_PYTHON": str(tmp_path / "no-python")})
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, needle)
    assert not out.exists()


@pytest.mark.ray
def test_ray_trains_the_same_deepreduce_networks_as_the_sequential_executor(searched):
    import shutil

    import ray

    result, out, base, data = searched  # the last test of the module: it retrains two of its runs
    candidates = sorted((out / "deepreduce" / "candidates").iterdir())
    retrain, kept = candidates[:2], {run: (run / "final.json").stat().st_mtime_ns for run in candidates[2:]}
    for run in retrain:
        shutil.rmtree(run)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        spread = frontier(SPEC, frontier_config(methods=["deepreduce"], executor="ray"), data=data, out=out, train=base,
                          teacher=frontier_teacher(), progress=False)
    finally:
        ray.shutdown()
    assert all((run / "final.json").is_file() for run in retrain)
    assert kept and all((run / "final.json").stat().st_mtime_ns == t for run, t in kept.items())  # finished: skipped

    def rows(points):
        return sorted((p.name, p.relus, p.val_acc) for p in points if p.method == "deepreduce")

    assert rows(spread.points) == rows(result.points)  # the same networks and accuracies, in Ray's workers


@pytest.mark.spu
def test_measure_runs_the_frontier_under_spu_next_to_the_estimate(searched):
    _, out, base, data = searched
    measured = frontier(SPEC, frontier_config(methods=["deepreduce"], engine="spu-cheetah", measure=True), data=data,
                        out=out, train=base, teacher=frontier_teacher(), progress=False)
    assert measured.frontier and all(p.measured for p in measured.frontier)
    for p in measured.frontier:
        assert p.measured["matches"] and p.measured["bytes"] > 0 and p.measured["online_s"] > 0
        # spu-cheetah is fitted on SPU bytes of widths 4-16 at 16x16 and 32x32; these width-2 8x8 nets are
        # below that range (bench/results/spu_calibration.md holds the 25 % out-of-sample check)
        assert 0.5 < p.measured["bytes"] / p.online_bytes < 2.0
    assert not any(p.measured for p in measured.points if not p.on_frontier)  # only the frontier is measured
    assert "Measured under SPU" in (out / "frontier.md").read_text()


def test_the_config_round_trips_through_json_and_refuses_unknown_fields():
    from relucut.errors import RelucutError

    config = frontier_config(latency_budgets=[0.5, 1.0], engine="spu-cheetah", init="teacher", gpus_per_job=0.25)
    again = FrontierConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again.settings["snl"], SNLConfig)
    assert again.settings["snl"].search_epochs == 1 and again.settings["deepreduce"].init == "teacher"
    with pytest.raises(RelucutError, match="unknown frontier config field"):
        FrontierConfig.from_dict({**config.to_dict(), "budget": 5})
    with pytest.raises(RelucutError, match="unknown snl config field"):
        FrontierConfig.from_dict({**config.to_dict(), "settings": {"snl": {"budgett": 5}}})
    for bad, needle in [({"init": "magic"}, "unknown init"), ({"gpus_per_job": 2.0}, "gpus_per_job"),
                        ({"methods": ["snl", "snl"]}, "listed twice"), ({"latency_budgets": []}, "is empty")]:
        with pytest.raises(RelucutError, match=needle):
            frontier_config(**bad).check()
