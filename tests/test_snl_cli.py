"""relucut snl / senet from the command line: outputs, and one-line errors."""

import json

import pytest
from conftest import assert_one_line_error, run_cli

from relucut import RelucutError, count
from relucut.finegrained import load_export

# a base that learns (about 50 % validation): a KD stage refuses a teacher at chance
TINY = ["--dataset", "digits", "--base-width", "4", "--limit-train", "256", "--epochs", "8",
        "--batch-size", "32", "-q"]


def test_snl_cli_writes_plan_recipe_and_export(tmp_path):
    proc = run_cli("snl", "resnet18", "--budget", "1k", *TINY, "--search-epochs", "1", "--finetune-epochs", "1",
                   "--granularity", "channel", "-o", tmp_path, "--device", "cpu", check=True,
                   env={"OMP_NUM_THREADS": "1"})
    result = json.loads(proc.stdout)
    assert result["method"] == "snl-channel"
    assert 990 <= result["result"]["relus"] <= 1000
    for name in ("config.json", "result.json", "export/plan.json", "export/recipe.json", "export/model.pt"):
        assert (tmp_path / name).is_file()
    assert count(load_export(tmp_path / "export"), (1, 8, 8)).relus == result["result"]["relus"]
    for stage in ("base", "search", "finetune"):  # every stage is a run of the training engine
        assert (tmp_path / stage / "final.json").is_file() and (tmp_path / stage / "metrics.jsonl").is_file()
    # the same command again (the device is not a setting) resumes from the finished checkpoints;
    # other settings are refused
    again = run_cli("snl", "resnet18", "--budget", "1k", *TINY, "--search-epochs", "1", "--finetune-epochs", "1",
                    "--granularity", "channel", "-o", tmp_path, check=True, env={"OMP_NUM_THREADS": "1"})
    assert json.loads(again.stdout)["result"] == result["result"]
    other = run_cli("snl", "resnet18", "--budget", "900", *TINY, "-o", tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert_one_line_error(other, "holds a run with different", "snl.budget")


def test_snl_cli_authors_recipe(tmp_path):
    proc = run_cli("snl", "resnet18", "--budget", "1k", *TINY, "--recipe", "authors", "--search-epochs", "1",
                   "--finetune-epochs", "1", "-o", tmp_path, "--device", "cpu", check=True,
                   env={"OMP_NUM_THREADS": "1"})
    result = json.loads(proc.stdout)
    assert result["result"]["relus"] == 1000
    assert result["forced_topk"]  # one search epoch cannot reach the budget by the authors' rule
    recipe = json.loads((tmp_path / "config.json").read_text())["snl"]
    assert (recipe["optimizer"], recipe["l1_rule"], recipe["finetune_schedule"]) == ("adam", "epochs", "cosine")
    metrics = json.loads((tmp_path / "search" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["lr"] == 1e-3 and metrics["relus"] > 1000


@pytest.mark.parametrize(
    "args, needles",
    [
        (["snl", "resnet18", "--budget", "0"], ["--budget must be at least 1 ReLU"]),
        (["snl", "resnet18", "--budget", "999k"], ["exceeds", "2,176"]),
        (["senet", "resnet18", "--budget", "500", "--dth", "0.2"], ["--shallow"]),
    ],
)
def test_cli_errors(args, needles):
    proc = run_cli(*args, "--dataset", "digits", "--base-width", "4", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert_one_line_error(proc, *needles)


@pytest.mark.parametrize(
    "command, kwargs, needle",
    [
        ("snl", {"budget": "many"}, "--budget"),
        ("snl", {"budget": "500", "granularity": "row"}, "--granularity"),
        ("senet", {"budget": "500", "shallow": True, "dth": 1.5}, "--dth"),
        ("senet", {"budget": "500", "aux_classifier": True, "aux_after": "s4"}, "stage before the last"),
        ("snl", {"budget": "500", "device": "tpu"}, "unknown device"),
        ("snl", {"budget": "500", "l1_init": -1.0}, "L1 coefficient must be > 0"),
        ("snl", {"budget": "500", "search_epochs": 0}, "search_epochs must be >= 1"),
        ("senet", {"budget": "500", "density": 2.0}, "--density"),
        ("senet", {"budget": "500", "mask_epochs": 0, "finetune_epochs": 0}, "nothing would train"),
        ("snl", {"budget": "500", "recipe": "paper"}, "unknown --recipe 'paper'"),
        ("snl", {"budget": "500", "recipe": "authors", "milestones": "3"}, "apply to the step fine-tuning schedule"),
        ("senet", {"budget": "500", "mask_learning": "magic"}, "unknown mask_learning 'magic'"),
        ("senet", {"budget": "500", "sensitivity": "oracle"}, "unknown sensitivity 'oracle'"),
    ],
)
def test_option_checks_before_any_training(command, kwargs, needle):
    from relucut.cli.methods import command as method_command

    with pytest.raises(RelucutError, match=needle):
        method_command(command)("resnet18", dataset="digits", base_width=4, **kwargs)
