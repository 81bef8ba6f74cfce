"""Run folders move and are shared (issue 19, item 5): a frontier folder moved elsewhere resumes
without training anything again, and each method's sub-folder is what that method's own command
writes: the single-method command pointed at it reuses it."""

import json
import shutil

import pytest
from conftest import run_cli

# a recipe whose teacher learns (KD refuses one at chance), exposed alike by every command
RECIPE = ["--dataset", "digits", "--base-width", "4", "--epochs", "3", "--batch-size", "16", "--limit-train", "256",
          "--device", "cpu", "-q"]
BASE_LR = ["--lr", "0.05"]  # the base recipe's (relucut snl's --lr is its search's own)
DEEPREDUCE = ["--criticality-epochs", "1", "--no-one-block"]  # the frontier's KD-only criticality
ENV = {"OMP_NUM_THREADS": "1"}


def trained(folder):
    """Every training run's final.json and when it was written: a run trained again rewrites its own."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("final.json")}


def rows(folder):
    doc = json.loads((folder / "frontier.json").read_text())
    return [(r["name"], r["relus"], r["val_acc"], r["test_acc"], r["on_frontier"]) for r in doc["points"]]


@pytest.mark.slow
def test_a_moved_frontier_resumes_and_its_folders_are_the_single_method_commands(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "moved"
    frontier = ["frontier", "resnet18", *RECIPE, *BASE_LR, *DEEPREDUCE, "--budget", "1200", "--methods", "deepreduce,snl"]
    run_cli(*frontier, "--out", first, env=ENV, check=True)
    before = rows(first)
    shutil.move(first, moved)  # keeps every file's mtime
    runs = trained(moved)
    assert len(runs) >= 10  # the teacher, the stage networks, the candidates, SNL's two stages
    run_cli(*frontier, "--out", moved, env=ENV, check=True)
    assert trained(moved) == runs and rows(moved) == before  # resumed: nothing trained again

    # SNL at the frontier's lengths for 3 epochs (search 1, fine-tuning 3, lr / 10 at epoch 2)
    snl = run_cli("snl", "resnet18", *RECIPE, "--budget", "1200", "--teacher", moved / "teacher", "--search-epochs",
                  "1", "--finetune-epochs", "3", "--milestones", "2", "--out", moved / "snl" / "1200", env=ENV,
                  check=True)
    assert json.loads(snl.stdout) == json.loads((moved / "snl" / "1200" / "result.json").read_text())
    deepreduce = run_cli("deepreduce", "resnet18", *RECIPE, *BASE_LR, *DEEPREDUCE, "--criticality-kd-only", "--budget", "1200",
                         "--teacher", moved / "teacher", "--out", moved / "deepreduce", env=ENV, check=True)
    assert "best under the budget" in deepreduce.stdout
    assert trained(moved) == runs  # both commands reused the frontier's runs


def test_a_method_run_refused_after_claiming_its_folder_leaves_nothing(tmp_path):
    """A teacher at chance is refused by the first KD stage, after the method and the stage have
    claimed their folders: the refusal is one line and the folders go (issue 19, item 7)."""
    from conftest import assert_one_line_error
    from fixtures.finegrained import BASE, tiny_data

    from relucut.train import train

    teacher = tmp_path / "teacher"
    train(BASE, teacher, data=tiny_data(), progress=False)  # one epoch of 192 images: at chance
    out = tmp_path / "snl"
    proc = run_cli("snl", "resnet18", "--dataset", "digits", "--base-width", "4", "--budget", "1000",
                   "--teacher", teacher, "--search-epochs", "1", "--finetune-epochs", "1", "--out", out, env=ENV)
    assert proc.returncode == 2
    assert_one_line_error(proc, "at chance")
    assert not out.exists()
