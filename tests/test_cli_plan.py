"""`relucut sites` lists what a plan can name; `relucut plan` writes the plan the other commands take
(issue 13, item 5)."""

import json

from typer.testing import CliRunner

from relucut.cli.app import _register, app

USER_NET = "fixtures.user_nets:user_net"  # the project's own net: ReLU6, MaxPool, GELU, an SE block


def invoke(*args):
    _register()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_sites_lists_relus_relu6_and_maxpools_with_stage_block_and_kind():
    result = invoke("sites", USER_NET, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    kinds = {site["kind"] for site in listed["sites"]}
    assert {"relu6", "maxpool"} <= kinds
    assert all(site["stage"] in listed["stages"] or site["gate"] or site["kind"] == "maxpool"
               for site in listed["sites"])
    counted = json.loads(invoke("count", USER_NET, "--json").stdout)
    assert [s["name"] for s in counted["sites"]] == [s["name"] for s in listed["sites"] if s["kind"] != "maxpool"]


def test_plan_drops_sites_and_replaces_maxpools_and_count_agrees(tmp_path):
    listed = json.loads(invoke("sites", USER_NET, "--json").stdout)["sites"]
    first_relu = next(s for s in listed if s["kind"] != "maxpool" and not s["gate"])
    out = tmp_path / "plan.json"
    made = invoke("plan", USER_NET, "--drop", first_relu["name"], "--replace-maxpool", "--out", out, "--json")
    assert made.exit_code == 0, made.output
    summary = json.loads(made.stdout)
    full = json.loads(invoke("count", USER_NET, "--json").stdout)
    planned = json.loads(invoke("count", USER_NET, "--plan", out, "--json").stdout)
    assert planned["relus"] == summary["relus"] == full["relus"] - _elements(first_relu)
    assert planned["nonlinear_by_kind"].get("maxpool", 0) == 0 < full["nonlinear_by_kind"]["maxpool"]
    decisions = json.loads(out.read_text())["sites"]
    assert decisions[first_relu["name"]]["action"] == "drop"
    assert {d["action"] for name, d in decisions.items() if name != first_relu["name"]} == {"avgpool"}


def _elements(site):
    n = 1
    for d in site["shape"]:
        n *= d
    return n


def test_plan_refusals_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "plan.json"
    for args, needle in ((["--drop", "no_such_site"], "has no ReLU site 'no_such_site'"),
                         ([], "nothing to plan"),
                         (["--cull", "s9"], "unknown stage 's9'")):
        result = invoke("plan", "resnet6", "--dataset", "digits", "--base-width", "4", *args, "--out", out)
        assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    result = invoke("plan", "resnet6", "--dataset", "digits", "--replace-maxpool", "--out", out)
    assert result.exit_code == 2 and "no max-pool" in result.stderr and not out.exists()
