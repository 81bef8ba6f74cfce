"""`relucut demo`: the cross-method frontier on the embedded digits data (two epochs per network here:
after one the teacher is still at chance, and KD refuses it)."""

import json

import pytest
from conftest import run_cli

from relucut.cli.frontier import DEMO_METHODS
from relucut.methods import get_method, methods


@pytest.mark.slow
def test_demo_prints_the_picks_and_writes_the_frontier_files(tmp_path):
    out = tmp_path / "demo"
    # 1 epoch: a teacher at chance; one of the two default budgets (each budget trains every mask method)
    proc = run_cli("demo", "--epochs", "2", "--budget", "1k", "--out", out, check=True)
    assert "Chosen per budget" in proc.stdout and "combined frontier" in proc.stdout
    doc = json.loads((out / "frontier.json").read_text())
    assert doc["model"]["name"] == "resnet18" and doc["dataset"] == "digits" and doc["budgets"] == [1000]
    assert {p["method"] for p in doc["points"]} == {"teacher", *DEMO_METHODS.split(",")}
    shown = {get_method(p["method"]).name for p in doc["points"] if p["method"] != "teacher"}
    assert shown == {m.name for m in methods()} - {"deepreshape"}  # a new method joins the demo
    for budget in doc["budgets"]:  # every budget gets a pick within it, printed with its ReLU count
        pick = [p for p in doc["points"] if budget in p["chosen_for"]]
        assert len(pick) == 1 and pick[0]["relus"] <= budget
        assert f"{pick[0]['relus']:,}" in proc.stdout
    png = (out / "frontier.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    settings = json.loads((out / "config.json").read_text())
    assert settings["train"]["dataset"] == "digits" and settings["train"]["epochs"] == 2
