"""Bad inputs on the command line: one line on stderr, exit 2, no traceback, nothing written, and the
corrected command then runs in the same place (issue 13, items 7, 8 and 11)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relucut.cli.app import _register, app

TINY = ["--base-width", "4", "--limit-train", "64", "--epochs", "1", "-q"]
TRAIN = ["train", "resnet6", "--dataset", "digits", *TINY]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread (conftest's fixture)."""


def invoke(*args):
    _register()
    return CliRunner().invoke(app, [str(a) for a in args])


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_refused(result, *needles):
    """Exit 2, exactly one line on stderr naming the problem, no traceback, no stdout."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in err, err


def image_folder(root: Path, classes=("dark", "light"), per_class=6) -> Path:
    from PIL import Image

    for i, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (10, 10), (20 + 200 * i, 20 + 200 * i, 20 + 200 * i)).save(folder / f"{k}.png")
    return root


# -- train: every bad input refused before the run folder is claimed ------------------------------------
def _bad_plan(tmp: Path) -> list[str]:
    (tmp / "bad.json").write_text("{not json")
    return ["--plan", str(tmp / "bad.json")]


def _plan_of_another_model(tmp: Path) -> list[str]:
    from relucut.models.registry import ModelSpec
    from relucut.plan import ReLUPlan
    from relucut.sites import find_sites

    spec = ModelSpec("resnet10", 10, 1, 8, {"base_width": 4})
    plan = ReLUPlan.deepreduce(find_sites(spec.build(), spec.input_size), cull=["s1"], thin=["s2"])
    (tmp / "other.json").write_text(json.dumps(plan.to_dict()))
    return ["--plan", str(tmp / "other.json")]


TRAIN_CASES = {
    "plan that is not JSON": (_bad_plan, ["corrupt plan JSON"]),
    "plan of another model": (_plan_of_another_model, ["has no ReLU site", "s1_0_relu"]),
    "plan file missing": (lambda tmp: ["--plan", str(tmp / "missing.json")], ["does not exist"]),
    "blocks of the wrong length": (lambda tmp: ["--blocks", "2,2"], ["blocks needs 4 values"]),
    "milestones not integers": (lambda tmp: ["--milestones", "a,b"], ["--milestones", "60,90"]),
    "unknown schedule": (lambda tmp: ["--schedule", "linear"], ["unknown schedule"]),
    "image size of a preset": (lambda tmp: ["--image-size", "16"], ["--image-size applies to imagefolder"]),
    "teacher missing": (lambda tmp: ["--teacher", str(tmp / "no-teacher")], ["does not exist"]),
    "unknown dataset": (lambda tmp: ["--dataset", "mnist"], ["unknown dataset 'mnist'", "imagefolder"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_refuses_a_bad_input_and_leaves_nothing_behind(case, tmp_path):
    make_bad, needles = TRAIN_CASES[case]
    bad = make_bad(tmp_path)
    before = files_under(tmp_path)
    out = tmp_path / "run"
    assert_refused(invoke(*TRAIN, *bad, "--out", out), *needles)
    assert files_under(tmp_path) == before  # no run folder, no config.json that would block the fix
    fixed = invoke(*TRAIN, "--out", out)
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout.strip().splitlines()[-1])["epochs"] == 1


@pytest.mark.parametrize("command", [
    TRAIN,
    ["export", "resnet6", "--dataset", "digits", "--base-width", "4", "--cull", "s1"],
    ["snl", "resnet6", "--budget", "300", "--dataset", "digits", "--base-width", "4"],
    ["senet", "resnet6", "--budget", "300", "--dataset", "digits", "--base-width", "4"],
    ["deepreduce", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1"],
    ["criticality", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1"],
])
@pytest.mark.parametrize("where", ["an existing file", "/proc"])
def test_an_unusable_out_is_one_line(command, where, tmp_path):
    out = tmp_path / "taken.txt" if where == "an existing file" else Path("/proc/relucut-test/run")
    if where == "an existing file":
        out.write_text("mine")
    before = files_under(tmp_path)
    result = invoke(*command, "--out", out)
    assert_refused(result, str(out) if where == "an existing file" else "/proc", "--out")
    assert files_under(tmp_path) == before and (where != "an existing file" or out.read_text() == "mine")


def test_a_corrupt_config_is_named_corrupt_and_deleting_it_lets_the_run_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"model": ')
    assert_refused(invoke(*TRAIN, "--out", out), "corrupt", "config.json")
    assert files_under(out) <= {"config.json", ".lock"}  # the file is left as it was, for the user to look at
    assert (out / "config.json").read_text() == '{"model": '
    (out / "config.json").unlink()
    assert invoke(*TRAIN, "--out", out).exit_code == 0


# -- the methods: option and input checks come before any folder is claimed ---------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    # a teacher that learned (one at chance is refused): all of digits, 3 epochs
    result = invoke("train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "3",
                    "--lr", "0.05", "--schedule", "cosine", "-q", "--out", run)
    assert result.exit_code == 0, result.output
    return run


METHOD_CASES = {
    "senet density above 1": (["senet", "resnet6", "--budget", "300", "--density", "2"], ["--density"]),
    "snl negative l1": (["snl", "resnet6", "--budget", "300", "--l1", "-1"], ["L1 coefficient must be > 0"]),
    "snl nothing to search": (["snl", "resnet6", "--budget", "300", "--search-epochs", "0", "--finetune-epochs", "0"],
                              ["search_epochs must be >= 1"]),
    "snl granularity": (["snl", "resnet6", "--budget", "300", "--granularity", "block"], ["--granularity"]),
}


@pytest.mark.parametrize("case", list(METHOD_CASES))
def test_method_options_are_refused_before_anything_is_written(case, tmp_path):
    args, needles = METHOD_CASES[case]
    assert_refused(invoke(*args, "--dataset", "digits", "--base-width", "4", "--out", tmp_path / "out"), *needles)
    assert files_under(tmp_path) == set()


def test_snl_refuses_a_teacher_of_another_network_then_runs_with_the_right_one(teacher_run, tmp_path):
    out = tmp_path / "snl"
    common = ["snl", "resnet6", "--budget", "300", "--dataset", "digits", "--limit-train", "64", "--epochs", "1",
              "--search-epochs", "1", "--finetune-epochs", "1", "-q", "--teacher", teacher_run, "--out", out]
    assert_refused(invoke(*common, "--base-width", "8"), "resnet6 (base_width=4)", "resnet6 (base_width=8)")
    assert not out.exists()
    fixed = invoke(*common, "--base-width", "4")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["result"]["relus"] <= 300


def test_criticality_refuses_a_teacher_of_another_network_and_a_missing_data_dir(teacher_run, tmp_path):
    out = tmp_path / "crit"
    common = ["criticality", "resnet6", "--epochs", "1", "--limit-train", "64", "--criticality-kd-only", "-q",
              "--out", out]
    assert_refused(invoke(*common, "--dataset", "digits", "--base-width", "8", "--teacher", teacher_run),
                   "is resnet6 (base_width=4)", "drop --teacher")
    assert_refused(invoke(*common, "--dataset", "imagefolder", "--data-dir", tmp_path / "images", "--base-width", "4"),
                   "does not exist", "--data-dir")
    assert files_under(tmp_path) == set()  # no search.json that would hold the folder
    image_folder(tmp_path / "images")
    fixed = invoke(*common, "--dataset", "imagefolder", "--data-dir", tmp_path / "images", "--base-width", "4")
    assert fixed.exit_code == 0, fixed.output
    saved = json.loads((out / "criticality.json").read_text())
    assert saved["model"]["num_classes"] == 2 and sorted(saved["order"]) == ["s1", "s2", "s3", "s4"]


def _criticality_file(path: Path, base_width: int) -> Path:
    from relucut.deepreduce.criticality import CriticalityTable, StageCriticality
    from relucut.models.registry import ModelSpec

    spec = ModelSpec("resnet6", 10, 1, 8, {"base_width": base_width})
    rows = [StageCriticality(s, 100 * (i + 1), 0.5 + 0.1 * i, None) for i, s in enumerate(("s1", "s2", "s3", "s4"))]
    table = CriticalityTable.build(spec.to_dict(), "digits", rows, ["stem", "s1", "s2", "s3", "s4"])
    path.write_text(json.dumps(table.to_dict()))
    return path


def test_deepreduce_refuses_the_criticality_of_another_model_then_claims_with_the_right_one(tmp_path):
    from relucut.deepreduce.search import Search
    from relucut.methods.deepreduce import DeepReDuceConfig
    from relucut.models.registry import ModelSpec
    from relucut.train import TrainConfig

    other, mine = _criticality_file(tmp_path / "w8.json", 8), _criticality_file(tmp_path / "w4.json", 4)
    out = tmp_path / "search"
    common = ["deepreduce", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1", "--out", out]
    assert_refused(invoke(*common, "--criticality", other), "resnet6 (base_width=8)", "resnet6 (base_width=4)")
    assert not out.exists()
    # the corrected command's settings pass every check and its folder can be claimed
    base = TrainConfig(model=ModelSpec("resnet6", 10, 1, 8, {"base_width": 4}), dataset="digits", epochs=1)
    with Search(DeepReDuceConfig(criticality_file=str(mine)), base, out).check_settings():
        assert json.loads((out / "search.json").read_text())["deepreduce"]["criticality_file"] == str(mine)


# -- hints ---------------------------------------------------------------------------------------------
def test_error_text_keeps_square_brackets(monkeypatch):
    """Install hints name their extra: rich markup must not eat "[data]"."""
    from relucut.errors import RelucutError

    def missing_extra(*args, **kwargs):
        raise RelucutError("the digits dataset needs scikit-learn; pip install 'relucut[data]'")

    monkeypatch.setattr("relucut.cli.options.model_spec", missing_extra)
    assert_refused(invoke("count", "resnet6", "--dataset", "digits"), "pip install 'relucut[data]'")


def test_eval_on_an_export_of_a_run_gives_the_runs_test_accuracy(teacher_run, tmp_path):
    exported = invoke("export", teacher_run, "--out", tmp_path / "exp", "--no-onnx", "--json")
    assert exported.exit_code == 0, exported.output
    by_run = json.loads(invoke("eval", teacher_run).stdout)
    by_export = json.loads(invoke("eval", tmp_path / "exp").stdout)
    assert by_export["n"] == by_run["n"] and abs(by_export["acc"] - by_run["acc"]) < 1e-9
    untrained = invoke("export", "resnet6", "--dataset", "digits", "--base-width", "4", "--cull", "s1", "--no-onnx",
                       "--out", tmp_path / "fresh")
    assert untrained.exit_code == 0, untrained.output
    assert_refused(invoke("eval", tmp_path / "fresh"), "untrained model")


def test_old_flag_names_stay_as_hidden_aliases():
    from relucut.cli.methods import command

    help_text = invoke("senet", "--help").stdout
    assert "--kd-weight" in help_text and "--lam" not in help_text and "--beta" not in help_text
    # --lam still reaches the config: an out-of-range value is refused by the kd_weight check
    assert_refused(invoke("senet", "resnet6", "--budget", "300", "--dataset", "digits", "--base-width", "4",
                          "--lam", "2"), "kd_weight")
    assert callable(command("senet"))


def test_a_factory_that_breaks_on_import_is_not_told_to_set_pythonpath(tmp_path, monkeypatch):
    # what a PyPI torchvision built for another torch does on import
    (tmp_path / "mismatched_vision.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("count", "mismatched_vision:resnet18")
    assert_refused(result, "torchvision does not fit torch", "download.pytorch.org/whl/cpu")
    assert "PYTHONPATH" not in result.stderr


def test_a_teacher_that_is_an_export_is_named_as_one(teacher_run, tmp_path):
    assert invoke("export", teacher_run, "--out", tmp_path / "exp", "--no-onnx").exit_code == 0
    result = invoke(*TRAIN, "--teacher", tmp_path / "exp", "--out", tmp_path / "student")
    assert_refused(result, "is an export", "not a training run")
    assert "train it first" not in result.stderr and not (tmp_path / "student").exists()


@pytest.mark.spu
def test_a_timed_out_spu_run_says_raise_timeout_not_recreate_the_environment():
    result = invoke("pi", "measure", "resnet6", "--dataset", "digits", "--base-width", "4", "--runs", "2",
                    "--timeout", "1")
    assert_refused(result, "took longer than 1 s", "raise --timeout")
    assert "spu-env" not in result.stderr
