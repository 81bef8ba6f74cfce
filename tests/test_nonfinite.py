"""A run never ships a broken network (issue 19, item 3; issue 21: epochs numbered from 1).

A non-finite loss, logged number or weight stops training with one line and exit 2, keeping
nothing of that epoch; a diverged or at-chance teacher is refused before a KD run writes
anything; JSON is written strictly; exports refuse non-finite weights.
"""

import json
import math

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from relucut.data import load_dataset
from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.rundir import atomic_write_json, json_text
from relucut.train import TrainConfig, read_final, train
from relucut.train.loop import truncate_metrics

SPEC = ModelSpec("resnet6", 10, 1, 8, {"base_width": 4})


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread (conftest's fixture)."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def config(**overrides):
    base = {"model": SPEC, "dataset": "digits", "epochs": 3, "lr": 0.05, "schedule": "cosine",
            "batch_size": 64}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, digits):
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(config(), run, progress=False, data=digits)
    return run


def test_the_issues_diverged_run_stops_with_one_line_and_ships_nothing(tmp_path):
    out = tmp_path / "x"
    proc = run_cli("train", "resnet18", "--dataset", "digits", "--base-width", "8", "--epochs", "2",
                   "--lr", "30", "--seed", "2", "-q", "--out", out)
    assert_one_line_error(proc, "training diverged in epoch", "not finite", "--lr", "new --out")
    assert proc.returncode == 2 and proc.stdout == ""
    assert not (out / "final.json").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []:
        assert all(math.isfinite(v) for v in json.loads(line).values() if isinstance(v, float))
    if (out / "best.pt").exists():  # an earlier, finite epoch may be kept: never a non-finite one
        state = torch.load(out / "best.pt", weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_non_finite_weights_stop_the_run_before_the_epoch_is_kept(tmp_path, digits):
    class Poison:  # leaves the loss and the outputs finite, one tensor of the model NaN
        def after_step(self, step, model):
            if step == 3:
                model.register_buffer("probe", torch.tensor([1.0, float("nan")]))

    with pytest.raises(RelucutError, match=r"diverged in epoch 1: weights are not finite \(probe\)"):
        train(config(epochs=2), tmp_path / "run", callbacks=[Poison()], progress=False, data=digits)
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_non_finite_metric_from_a_callback_stops_the_run(tmp_path, digits):
    class Infinite:
        def on_epoch_end(self, epoch, model, metrics):
            metrics["relus"] = float("inf") if epoch == 1 else 10.0

    with pytest.raises(RelucutError, match="diverged in epoch 2: relus is not finite"):
        train(config(epochs=3), tmp_path / "run", callbacks=[Infinite()], progress=False, data=digits)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # epoch 2 was not kept
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"]["epoch"] == 1


def _broken_teacher(run, tmp_path, how):
    """A copy of a trained run whose weights are NaN, or whose head answers one class (at chance)."""
    copy = tmp_path / f"teacher_{how}"
    copy.mkdir()
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        if how == "nan":
            ckpt["model"]["fc.weight"][0, 0] = float("nan")
        else:  # constant logits: argmax is class 0 for every image
            ckpt["model"]["fc.weight"].zero_()
            ckpt["model"]["fc.bias"].zero_()
        torch.save(ckpt, copy / name)
    return copy


@pytest.mark.parametrize("how, needle", [("nan", "non-finite weights"), ("chance", "is at chance")])
def test_a_broken_teacher_is_refused_before_anything_is_written(teacher_run, tmp_path, how, needle):
    teacher = _broken_teacher(teacher_run, tmp_path, how)
    out = tmp_path / "student"
    proc = run_cli("train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1", "-q",
                   "--teacher", teacher, "--out", out)
    assert_one_line_error(proc, needle, "another teacher")
    assert not out.exists()
    snl = run_cli("snl", "resnet6", "--dataset", "digits", "--base-width", "4", "--budget", "300", "-q",
                  "--teacher", teacher, "--out", tmp_path / "snl")
    assert_one_line_error(snl, needle)


def test_a_teacher_module_at_chance_is_refused(tmp_path, digits):
    teacher = SPEC.build()
    torch.nn.init.zeros_(teacher.fc.weight)
    torch.nn.init.zeros_(teacher.fc.bias)
    with pytest.raises(RelucutError, match="the teacher is at chance"):
        train(config(epochs=1), tmp_path / "run", teacher=teacher, progress=False, data=digits)
    assert not (tmp_path / "run").exists()


def test_a_good_teacher_is_accepted(teacher_run, tmp_path, digits):
    final = train(config(epochs=1, teacher=str(teacher_run)), tmp_path / "run", progress=False, data=digits)
    assert final["epochs"] == 1


def test_the_issues_diverged_frontier_stops_with_one_line(tmp_path):
    out = tmp_path / "f"
    proc = run_cli("frontier", "resnet18", "--dataset", "digits", "--base-width", "8", "--epochs", "2",
                   "--lr", "30", "--seed", "2", "--methods", "snl,senet", "--budgets", "1000", "--quiet",
                   "--out", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("diverged" in errors[0] or "at chance" in errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "frontier.json").exists() and not list(out.rglob("export"))


def test_an_export_of_non_finite_weights_is_refused(tmp_path):
    from relucut.export import export_model
    from relucut.plan import ReLUPlan

    model = SPEC.build()
    state = model.state_dict()
    state["fc.weight"][1, 1] = float("inf")
    with pytest.raises(RelucutError, match="NaN or infinite values \\(fc.weight\\)"):
        export_model(SPEC, ReLUPlan(), state, tmp_path / "exp", onnx=False)
    assert not (tmp_path / "exp").exists()


def test_json_is_written_strictly(tmp_path):
    with pytest.raises(RelucutError, match="non-finite number"):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    with pytest.raises(RelucutError, match="non-finite number"):
        json_text({"a": [1.0, float("-inf")]})
    assert not (tmp_path / "x.json").exists() and list(tmp_path.iterdir()) == []


# -- issue 21: epochs are numbered from 1 in every file, and old runs read the same -----------------------
def test_final_and_metrics_number_epochs_from_one(teacher_run):
    final = json.loads((teacher_run / "final.json").read_text())
    lines = [json.loads(line) for line in (teacher_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3] and final["first_epoch"] == 1
    best = max(lines, key=lambda m: m["val_acc"])  # the first epoch reaching the best accuracy is kept
    assert final["best_epoch"] == min(m["epoch"] for m in lines if m["val_acc"] == best["val_acc"])
    assert read_final(teacher_run) == final


def test_an_old_run_reads_and_resumes_numbered_from_one(tmp_path, digits):
    """A run written before: final.json without first_epoch, metrics and checkpoints numbered from 0."""
    run = tmp_path / "old"
    train(config(epochs=2), run, progress=False, data=digits)
    final = json.loads((run / "final.json").read_text())
    old_final = {k: v for k, v in final.items() if k != "first_epoch"}
    old_final["best_epoch"] = final["best_epoch"] - 1
    (run / "final.json").write_text(json.dumps(old_final))
    assert read_final(run)["best_epoch"] == final["best_epoch"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    old_lines = [{**m, "epoch": m["epoch"] - 1} for m in lines]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in old_lines))
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        del ckpt["state"]["one_based_logs"]
        torch.save(ckpt, run / name)
    more = train(config(epochs=2), run, progress=False, data=digits)  # finished: final.json written again
    assert more["best_epoch"] == final["best_epoch"]
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_truncate_metrics_drops_unkept_epochs_and_renumbers_old_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    truncate_metrics(path, 2)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    path.write_text('{"epoch": 0, "a": 1}\n{"epoch": 1}\n{"epoch": 2}\n')
    truncate_metrics(path, 2, renumber=True)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [{"epoch": 1, "a": 1}, {"epoch": 2}]
