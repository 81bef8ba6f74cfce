"""`relucut demo`: the cross-method frontier on the embedded digits data (two epochs per network here:
after one the teacher is still at chance, and KD refuses it), and its folder moved elsewhere (issue
19, item 5): the rerun trains nothing, and each method's sub-folder is what that method's own command
writes, so the single-method command pointed at it reuses it."""

import json
import shutil

import pytest
from conftest import run_cli

from relucut.cli.frontier import DEMO_METHODS
from relucut.methods import get_method, methods

pytestmark = pytest.mark.slow
# 1 epoch: a teacher at chance; one of the two default budgets (each budget trains every mask method)
DEMO = ["demo", "--epochs", "2", "--budget", "1k"]
# the demo's recipe, as a user passes it to the single-method commands
RECIPE = ["--dataset", "digits", "--base-width", "8", "--epochs", "2", "--batch-size", "64", "--schedule", "cosine",
          "--val-fraction", "0.1", "--seed", "0", "--device", "cpu", "-q"]
BASE_LR = ["--lr", "0.05"]  # the base recipe's (relucut snl's --lr is its search's own)
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_cli(*DEMO, "--out", out, env=ENV, check=True)


def trained(folder):
    """Every training run's final.json and when it was written: a run trained again rewrites its own."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("final.json")}


def rows(folder):
    doc = json.loads((folder / "frontier.json").read_text())
    return [(r["name"], r["relus"], r["val_acc"], r["test_acc"], r["on_frontier"]) for r in doc["points"]]


def test_demo_prints_the_picks_and_writes_the_frontier_files(demo):
    out, proc = demo
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


def test_the_moved_demo_resumes_and_its_folders_are_the_single_method_commands(demo, tmp_path):
    first, _ = demo
    before = rows(first)
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(first, moved)  # keeps every file's mtime; the other test keeps its folder
    runs = trained(moved)
    assert len(runs) >= 10  # the teacher, the stage networks, the candidates, each mask method's stages
    run_cli(*DEMO, "--out", moved, env=ENV, check=True)
    assert trained(moved) == runs and rows(moved) == before  # resumed: nothing trained again

    # SNL at the frontier's lengths for 2 epochs (search 1, fine-tuning 2, lr / 10 at epoch 1)
    snl = run_cli("snl", "resnet18", *RECIPE, "--budget", "1000", "--teacher", moved / "teacher", "--search-epochs",
                  "1", "--finetune-epochs", "2", "--milestones", "1", "--out", moved / "snl" / "1000", env=ENV,
                  check=True)
    assert json.loads(snl.stdout) == json.loads((moved / "snl" / "1000" / "result.json").read_text())
    deepreduce = run_cli("deepreduce", "resnet18", *RECIPE, *BASE_LR, "--no-one-block", "--criticality-kd-only", "--budget",
                         "1000", "--teacher", moved / "teacher", "--out", moved / "deepreduce", env=ENV, check=True)
    assert "best under the budget" in deepreduce.stdout
    assert trained(moved) == runs  # both commands reused the frontier's runs
