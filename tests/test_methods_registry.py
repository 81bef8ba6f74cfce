"""Every registered method, the same checks (timm style): a new method is tested by registering it.

On a tiny ResNet18 on digits each method runs to an export whose counted ReLUs are within its
budget, a rerun with the same settings trains nothing again, its config round-trips through JSON
and refuses unknown fields, and its command offers every config field as an option with help."""

import dataclasses
import json

import pytest
from conftest import run_cli
from fixtures.finegrained import BASE, SPEC, TEACHER, tiny_data
from fixtures.teachers import learned_teacher

import relucut
from relucut import RelucutError, count
from relucut.frontier_search import FrontierConfig
from relucut.methods import get_method, list_methods

pytestmark = pytest.mark.usefixtures("one_thread")
BUDGET = 900  # of the tiny ResNet18's 2,176


@pytest.fixture(scope="module")
def data_and_teacher(tmp_path_factory):
    from relucut.train import train

    data = tiny_data()
    teacher = tmp_path_factory.mktemp("teacher") / "run"
    train(TEACHER, teacher, data=data, progress=False)  # a teacher that learned: KD refuses one at chance
    return data, teacher


def tiny_config(name: str):
    """The method at BUDGET with the lengths a frontier of 1-epoch networks gives it."""
    template = FrontierConfig(budgets=[BUDGET]).resolve(base_epochs=1).template(name)
    if hasattr(template, "one_block"):
        template = dataclasses.replace(template, one_block=False)  # fewer candidates, same code paths
    return template.with_budget(BUDGET)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_exports_within_its_budget_and_a_rerun_trains_nothing(name, data_and_teacher, tmp_path):
    from relucut.export import load_export

    data, teacher = data_and_teacher
    config = tiny_config(name)
    out = tmp_path / name
    result = relucut.reduce(SPEC, config, data=data, teacher=teacher, train=BASE, out=out, progress=False)
    assert result.relus <= BUDGET and result.budget == BUDGET
    assert count(load_export(result.export_dir), SPEC.input_size).relus == result.relus  # the export counts so
    assert result.val_acc is not None and 0.0 <= result.val_acc <= 1.0
    assert result.run_dir == out and (out / "result.json").is_file()
    finals = {f: f.stat().st_mtime_ns for f in out.rglob("final.json")}
    assert finals  # the method trained through the engine
    again = relucut.reduce(SPEC, config, data=data, teacher=teacher, train=BASE, out=out, progress=False)
    assert (again.relus, again.val_acc, again.test_acc) == (result.relus, result.val_acc, result.test_acc)
    assert {f: f.stat().st_mtime_ns for f in out.rglob("final.json")} == finals  # nothing trained again


@pytest.mark.parametrize("name", list_methods())
def test_every_config_round_trips_through_json_and_refuses_unknown_fields(name):
    cls = get_method(name).config
    config = tiny_config(name)
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert cls.from_dict(config.record()) == config
    with pytest.raises(RelucutError, match=f"unknown {name} config field"):
        cls.from_dict({**config.to_dict(), "no_such_setting": 1})
    with pytest.raises(RelucutError, match=f"not '{name}'"):
        cls.from_dict({**config.record(), "method": "another"})


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).command])
def test_every_command_offers_each_config_field_with_help(name):
    from relucut.cli.methods import _fields

    help_text = run_cli(name, "--help", check=True).stdout
    for field in _fields(get_method(name)):
        assert field.flag.split("/")[0] in help_text, field.flag
        assert field.meta["help"].split()[0] in help_text, field.name


def test_relucut_frontier_and_relucut_frontier_in_python_train_the_same_networks(tmp_path):
    """The same values from the command line and from Python resolve to the same settings: each
    run folder records exactly the same settings (epoch scaling of the masked methods included)."""
    from relucut.train import TrainConfig, load_data

    common = dict(epochs=2, batch_size=32, limit_train=96, device="cpu")
    teacher = learned_teacher(SPEC, limit_train=96)
    cli = run_cli("frontier", "resnet18", "--dataset", "digits", "--base-width", "4", "--budget", "600",
                  "--methods", "snl,senet", "--epochs", "2", "--batch-size", "32", "--limit-train", "96",
                  "--device", "cpu", "-q", "--teacher", teacher, "--out", tmp_path / "cli",
                  env={"OMP_NUM_THREADS": "1"}, check=True)
    assert "chosen per budget" in cli.stdout.lower()
    base = TrainConfig(model=SPEC, dataset="digits", **common)
    relucut.frontier(SPEC, FrontierConfig(budgets=[600], methods=["snl", "senet"]), data=load_data(base),
                     out=tmp_path / "py", train=base, teacher=teacher, progress=False)

    def settings(folder):
        saved = json.loads(folder.read_text())
        if isinstance(saved.get("teacher"), dict):  # each folder's own teacher, trained by the same recipe
            saved["teacher"] = "OUT/teacher"  # (its config.json is compared below)
        return saved

    for record in ("config.json", "snl/600/config.json", "senet/600/config.json"):
        assert settings(tmp_path / "cli" / record) == settings(tmp_path / "py" / record), record
    senet = settings(tmp_path / "py" / "senet/600/config.json")["senet"]
    assert (senet["finetune_epochs"], senet["mask_epochs"], senet["milestones"]) == (2, 1, [1])  # scaled, not 180
