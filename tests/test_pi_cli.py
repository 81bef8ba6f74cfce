"""``relucut pi estimate|measure|calibrate`` from the command line, and their error messages."""

import json

import pytest
from conftest import assert_one_line_error, run_cli

from relucut.errors import RelucutError
from relucut.pi import Workload, estimate
from relucut.pi.calibrate import read_measurements
from relucut.pi.graph_export import export_graph


def test_estimate_json_for_a_zoo_model_with_a_plan():
    proc = run_cli("pi", "estimate", "resnet18", "--dataset", "cifar100", "--cull", "stem,s1",
                   "--thin", "s2,s3,s4", "--bandwidth", "100mbit", "--rtt", "1ms", "--threads", "2",
                   "--requests-per-s", "0.001", "--json", check=True)
    est = json.loads(proc.stdout)
    assert est["relus"] == 114_688 and est["relu_layers"] == 6 and est["protocol"] == "delphi"
    assert est["bandwidth_bps"] == 1e8 and est["rtt_s"] == pytest.approx(1e-3) and est["threads"] == 2
    assert est["total_s"] == pytest.approx(est["online_s"] + est["offline_s"])
    assert est["requests"]["rate_per_s"] == 0.001


def test_estimate_export_dir_counts_the_export(tmp_path):
    from relucut import ReLUPlan, find_sites
    from relucut.export import export_model
    from relucut.models.registry import ModelSpec

    spec = ModelSpec(name="resnet18", num_classes=10, in_chans=3, image_size=16,
                     kwargs={"base_width": 4, "blocks": [1, 1, 1, 1]})
    plan = ReLUPlan.deepreduce(find_sites(spec.build(), spec.input_size), cull=["s1"])
    export_model(spec, plan, None, tmp_path / "exp", onnx=False)
    proc = run_cli("pi", "estimate", tmp_path / "exp", "--engine", "cheetah", "--json", check=True)
    assert json.loads(proc.stdout)["relus"] == 2816
    old = run_cli("pi", "estimate", tmp_path / "exp", "--protocol", "cheetah", "--json", check=True)  # its old name
    assert json.loads(old.stdout) == json.loads(proc.stdout) and "--protocol is now --engine" in old.stderr


def test_missing_spu_env_names_make_target():
    proc = run_cli("pi", "measure", "resnet18", env={"RELUCUT_SPU_PYTHON": "/nonexistent/python"})
    assert_one_line_error(proc, "make spu-env")


def test_export_dir_without_recipe(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    proc = run_cli("pi", "estimate", tmp_path)
    assert_one_line_error(proc, "recipe.json", "relucut export")


@pytest.mark.spu  # `pi measure` checks for .venv-spu before it exports the graph
def test_unsupported_operator_is_named():
    from fixtures.pi_nets import mish_net

    with pytest.raises(RelucutError, match="Mish at 'act'"):
        export_graph(mish_net().eval(), (3, 8, 8))
    proc = run_cli("pi", "measure", "fixtures.pi_nets:mish_net", "--dataset", "cifar10")
    assert_one_line_error(proc, "does not support module Mish", "rewrite")


def test_bad_options_are_rejected():
    from relucut.units import BITS_PER_S, SECONDS, parse_quantity

    assert parse_quantity("100mbit", BITS_PER_S, "--bandwidth", "1gbit") == 1e8
    assert parse_quantity("300us", SECONDS, "--rtt", "0.3ms") == pytest.approx(3e-4)
    with pytest.raises(RelucutError, match="--bandwidth takes a number with a unit"):
        parse_quantity("fast", BITS_PER_S, "--bandwidth", "1gbit")
    with pytest.raises(RelucutError, match="unknown protocol"):
        estimate(Workload(1, 1, 1), "gazelle")


def test_calibrate_writes_a_profile_estimate_reads(tmp_path):
    rows = [{"relus": r, "relu_layers": n, "macs": m, "online_s": r * 5e-5 + n * 0.02, "online_bytes": r * 90.0}
            for r, n, m in [(1000, 2, 1e5), (4000, 5, 2e5), (9000, 3, 5e5), (16000, 8, 4e5)]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    out = tmp_path / "prof.json"
    run_cli("pi", "calibrate", tmp_path / "rows.json", "--out", out, check=True)
    data = json.loads(out.read_text())
    assert data["relu_online_s"] == pytest.approx(5e-5, rel=1e-4) and data["fit"]["bytes_r2"] == pytest.approx(1.0)
    est = estimate(Workload(557_056, 17, 0), profile_file=str(out), bandwidth_bps=100e9)
    assert est.online_s == pytest.approx(557_056 * 5e-5 + 17 * 0.02, rel=1e-3)
    with pytest.raises(RelucutError, match="not found"):
        read_measurements([tmp_path / "nope.json"])


def test_count_shows_the_delphi_estimate():
    proc = run_cli("count", "resnet18", "--dataset", "cifar100", "--cull", "stem,s1", "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["relus"] == 229_376
    assert data["pi_estimate"]["protocol"] == "delphi"
    assert abs(data["pi_estimate"]["online_s"] / 4.61 - 1) < 0.25  # DeepReDuce Table 4, first row
