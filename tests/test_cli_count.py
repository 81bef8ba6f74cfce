"""``relucut count`` as a user runs it: JSON fields, tables, and one-line errors."""

import json

import pytest

from conftest import assert_one_line_error, run_cli


def count_json(*args):
    proc = run_cli("count", *args, "--json", check=True)
    return json.loads(proc.stdout)


def test_count_json_has_the_documented_fields():
    data = count_json("resnet18", "--dataset", "cifar100", "--cull", "stem,s1", "--thin", "s2,s3,s4")
    assert data["relus"] == 114_688
    assert data["relus_by_stage"] == {"stem": 0, "s1": 0, "s2": 65_536, "s3": 32_768, "s4": 16_384}
    assert abs(data["macs"] - 0.556e9) / 0.556e9 < 0.01
    assert data["params"] > 11_000_000
    assert len(data["sites"]) == 17 and data["sites"][0]["name"] == "stem_relu"


def test_count_model_options():
    data = count_json("resnet18", "--base-width", "16", "--blocks", "2,1,1,1", "--alpha", "0.5", "--rho", "0.5")
    # m=16, alpha 0.5 -> 8 channels in s1, rho 0.5 -> 16x16 maps
    assert data["relus_by_stage"]["stem"] == 8 * 16 * 16
    assert data["relus_by_stage"]["s2"] == 2 * 16 * 8 * 8


def test_count_user_factory_and_table():
    data = count_json("fixtures.tv_resnet:tv_resnet18", "--num-classes", "7")
    assert len(data["sites"]) == 17
    proc = run_cli("count", "resnet20", check=True)
    assert "total" in proc.stdout and "188,416" in proc.stdout


def test_count_plan_file(tmp_path):
    from relucut import ReLUPlan

    plan = tmp_path / "plan.json"
    ReLUPlan().drop("stem_relu").save(plan)
    assert count_json("resnet18", "--plan", plan)["relus"] == 557_056 - 65_536


@pytest.mark.parametrize(
    "args, needle",
    [
        (["resnet19"], "unknown model"),
        (["resnet18", "--cull", "s5"], "unknown stage 's5'"),
        (["resnet18", "--alpha", "0"], "alpha"),
        (["resnet18", "--rho", "3"], "rho"),
        (["resnet18", "--blocks", "2,x"], "--blocks"),
        (["resnet18", "--dataset", "mnist"], "unknown dataset"),
        (["nosuchpkg.mod:factory"], "cannot import"),
        (["fixtures.tv_resnet:broken_factory"], "boom"),
        (["resnet18", "--plan", "missing.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    assert_one_line_error(run_cli("count", *args), needle)


def test_models_lists_the_zoo():
    out = run_cli("models", check=True).stdout
    assert "resnet18" in out and "wrn22_8" in out
