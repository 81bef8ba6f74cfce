"""Training runs on the embedded digits: accuracy, run-dir contents, hooks, callbacks, plans, errors."""

import json

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from relucut.data import load_dataset
from relucut.errors import RelucutError
from relucut.models import ModelSpec
from relucut.plan import ReLUPlan
from relucut.sites import find_sites
from relucut.train import TrainConfig, build_model, evaluate, load_checkpoint_model, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def digits_config(model="resnet6", base_width=8, **kw):
    spec = ModelSpec(model, num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": base_width})
    settings = {"lr": 0.05, "schedule": "cosine", "batch_size": 64, **kw}
    return TrainConfig(model=spec.to_dict(), dataset="digits", **settings)


def test_short_digits_run_is_far_better_than_chance(tmp_path, digits):
    cfg = digits_config(epochs=4)
    final = train(cfg, tmp_path, progress=False, data=digits)
    assert final["test_acc"] > 0.6 and final["best_val_acc"] > 0.6  # chance is 0.1
    assert final["epochs"] == 4 and 1 <= final["best_epoch"] <= 4  # numbered from 1, as displayed
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.jsonl", "last.pt", "best.pt", "final.json"}
    assert json.loads((tmp_path / "final.json").read_text()) == final
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]
    assert max(m["val_acc"] for m in lines) == final["best_val_acc"]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    saved = TrainConfig.load(tmp_path / "config.json")
    assert saved == cfg.resolved() and saved.augment == "crop"  # digits are not mirrored

    # the best checkpoint rebuilds from its config and reproduces the recorded figures
    model = load_checkpoint_model(tmp_path)
    assert evaluate(model, digits, split="val")["acc"] == final["best_val_acc"]
    assert evaluate(model, digits, split="test")["acc"] == final["test_acc"]


def test_finished_run_rerun_does_not_retrain_and_other_settings_are_refused(tmp_path, digits):
    cfg = digits_config(epochs=1, limit_train=128)
    first = train(cfg, tmp_path, progress=False, data=digits)
    mtime = (tmp_path / "last.pt").stat().st_mtime_ns
    again = train(cfg, tmp_path, progress=False, data=digits)
    assert (tmp_path / "last.pt").stat().st_mtime_ns == mtime
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    changed = digits_config(epochs=1, limit_train=128, lr=0.2)
    with pytest.raises(RelucutError, match="different lr"):
        train(changed, tmp_path, progress=False, data=digits)


def test_extra_loss_sees_the_step_and_hooked_activations_and_callbacks_run(tmp_path, digits):
    model = build_model(digits_config())
    captured = {}
    model.s1[0].relu.register_forward_hook(lambda mod, args, out: captured.__setitem__("act", out))
    seen = []

    def extra_loss(ctx):
        assert ctx.model is model and ctx.teacher_logits is None
        assert ctx.logits.shape == (ctx.inputs.shape[0], 10) and ctx.targets.shape == (ctx.inputs.shape[0],)
        assert captured["act"].shape[0] == ctx.inputs.shape[0]  # the hook ran on this very batch
        seen.append((ctx.epoch, ctx.step))
        return {"act_l1": 1e-3 * captured["act"].abs().mean()}

    class Recorder:
        def __init__(self):
            self.events = []

        def on_epoch_start(self, epoch, model):
            self.events.append(("start", epoch))

        def on_epoch_end(self, epoch, model, metrics):
            self.events.append(("end", epoch))
            metrics["relus"] = 1000 - epoch

    recorder = Recorder()
    train(digits_config(epochs=2, limit_train=128), tmp_path, model=model, extra_loss=extra_loss,
          callbacks=[recorder], progress=False, data=digits)
    assert recorder.events == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    assert [s for _, s in seen] == list(range(len(seen))) and seen[-1][0] == 1
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["relus"] for m in lines] == [1000, 999] and all(m["act_l1"] > 0 for m in lines)


def test_param_groups_reach_the_optimizer(tmp_path, digits):
    model = build_model(digits_config())
    frozen_fc = {"params": list(model.fc.parameters()), "lr": 0.0, "weight_decay": 0.0}
    rest = {"params": [p for n, p in model.named_parameters() if not n.startswith("fc.")]}
    before = model.fc.weight.detach().clone()
    stem_before = model.stem.conv.weight.detach().clone()
    train(digits_config(epochs=1, limit_train=128), tmp_path, model=model, param_groups=[frozen_fc, rest],
          progress=False, data=digits)
    assert torch.equal(model.fc.weight, before) and not torch.equal(model.stem.conv.weight, stem_before)


def test_plan_is_applied_to_the_trained_model_and_its_checkpoint(tmp_path, digits):
    cfg = digits_config(epochs=1, limit_train=128)
    sites = find_sites(build_model(cfg), (1, 8, 8))
    plan = ReLUPlan.deepreduce(sites, cull=["stem", "s1"])
    cfg.plan = plan.to_dict()
    train(cfg, tmp_path, progress=False, data=digits)
    model = load_checkpoint_model(tmp_path)
    assert model.stem.relu.mode == "identity" and model.s1[0].relu.mode == "identity"
    assert isinstance(model.s2[0].relu, torch.nn.ReLU)  # sites the plan does not name stay


def test_step_schedule_milestones_and_json_round_trip():
    cfg = TrainConfig(epochs=120).resolved()
    assert cfg.milestones == [30, 60, 90] and cfg.augment == "crop+flip" and cfg.crop_padding == 4
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig(epochs=100, milestones=[50, 75]).resolved().milestones == [50, 75]


def test_lr_follows_the_step_schedule(tmp_path, digits):
    cfg = digits_config(epochs=3, limit_train=64, schedule="step", milestones=[1, 2], gamma=0.5)
    train(cfg, tmp_path, progress=False, data=digits)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.05, 0.025, 0.0125])


def test_data_split_otherwise_than_the_config_says_is_refused(tmp_path, digits):
    with pytest.raises(RelucutError, match="different seed"):
        train(digits_config(epochs=1, seed=3), tmp_path, progress=False, data=digits)


def test_spec_that_does_not_fit_the_dataset_is_refused(tmp_path, digits):
    cfg = TrainConfig(model=ModelSpec("resnet6").to_dict(), dataset="digits", epochs=1)
    with pytest.raises(RelucutError, match="inputs but digits images are 1x8x8"):
        train(cfg, tmp_path, progress=False, data=digits)


def test_cli_train_then_eval(tmp_path):
    from typer.testing import CliRunner

    from relucut.cli.app import _register, app

    _register()
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1",
                                      "--limit-train", "128", "--lr", "0.05", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    final = json.loads(result.output.strip().splitlines()[-1])
    assert final["run_dir"] == str(out) and final["epochs"] == 1
    result = CliRunner().invoke(app, ["eval", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["acc"] == final["test_acc"]
    assert_one_line_error(run_cli("eval", tmp_path / "missing"), "does not exist")


def test_cli_trains_on_an_image_folder(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from relucut.cli.app import _register, app

    for label, color in (("dark", (20, 20, 20)), ("light", (230, 230, 230))):
        for split, count in (("train", 6), ("test", 2)):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), color).save(folder / f"{i}.png")
    _register()
    result = CliRunner().invoke(app, [
        "train", "resnet6", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"), "--image-size", "8",
        "--base-width", "4", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25",
        "--out", str(tmp_path / "run"), "-q",
    ])
    assert result.exit_code == 0, result.output
    final = json.loads(result.output.strip().splitlines()[-1])
    assert (final["train_images"], final["val_images"], final["test_images"]) == (9, 3, 4)
    config = TrainConfig.load(tmp_path / "run" / "config.json")
    assert config.spec().num_classes == 2 and config.spec().image_size == 8


def test_same_command_twice_reuses_the_default_run_dir(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from relucut.cli.app import _register, app

    monkeypatch.chdir(tmp_path)
    _register()
    args = ["train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1",
            "--limit-train", "64", "-q"]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = (json.loads(r.output.strip().splitlines()[-1]) for r in (first, second))
    assert a["run_dir"] == b["run_dir"] and a["run_dir"].startswith("runs/resnet6-digits-")
    assert len(list((tmp_path / "runs").iterdir())) == 1 and a["test_acc"] == b["test_acc"]
    third = CliRunner().invoke(app, [*args[:-1], "--seed", "1", "-q"])
    assert json.loads(third.output.strip().splitlines()[-1])["run_dir"] != a["run_dir"]


def test_bf16_autocast_and_channels_last_paths_train(tmp_path, digits):
    # the CUDA defaults, exercised on CPU: autocast to bf16 and channels_last inputs and weights
    final = train(digits_config(epochs=2, bf16=True, channels_last=True), tmp_path, progress=False, data=digits)
    assert final["bf16"] is True and final["test_acc"] > 0.3


def test_cli_train_takes_cull_and_thin_like_count(tmp_path):
    from typer.testing import CliRunner

    from relucut.cli.app import _register, app

    _register()
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "resnet10", "--dataset", "digits", "--base-width", "4", "--epochs", "1",
                                      "--limit-train", "64", "--cull", "stem,s1", "--thin", "s2", "--out", str(out),
                                      "-q"])
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "config.json").read_text())["plan"]
    dropped = sorted(name for name, d in plan["sites"].items() if d["action"] == "drop")
    assert dropped == ["s1_0_relu1", "s1_0_relu2", "s2_0_relu2", "stem_relu"]  # thinning drops the post-add ReLU


def test_device_names_are_checked():
    from relucut.train.distributed import Dist, resolve_device

    assert resolve_device("cpu", Dist()) == torch.device("cpu")
    with pytest.raises(RelucutError, match="unknown device 'tpu'"):
        resolve_device("tpu", Dist())
    digits_config(device="cuda:1").resolved()  # a name is checked here; whether the GPU exists, at training
    with pytest.raises(RelucutError, match="unknown device 'cuda1'"):  # before any run dir is written
        digits_config(device="cuda1").resolved()
    if torch.cuda.is_available():
        assert resolve_device("cuda", Dist()).type == "cuda"
    else:
        with pytest.raises(RelucutError, match="no GPU is visible"):
            resolve_device("cuda", Dist())


def test_default_step_milestones_scale_with_the_epochs():
    from relucut.train.config import TrainConfig, default_milestones

    assert default_milestones(120) == [30, 60, 90]  # DeepReDuce's schedule
    assert default_milestones(240) == [60, 120, 180]  # scaled beyond DeepReDuce's length
    assert default_milestones(12) == [6, 9]  # a short run decays too, late enough to learn first
    assert default_milestones(2) == [1]
    assert default_milestones(10, step_size=4) == [4, 8]
    assert TrainConfig(epochs=8).resolved().milestones == [4, 6]
