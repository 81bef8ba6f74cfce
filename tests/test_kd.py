"""Knowledge distillation: the loss by hand, a distilled student on digits, teachers that do not fit."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error, run_cli
from relucut.data import load_dataset
from relucut.errors import RelucutError
from relucut.models import ModelSpec
from relucut.train import TrainConfig, build_model, kd_loss, train
from relucut.train.checkpoint import atomic_torch_save
from relucut.train.loop import checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


def digits_config(model="resnet6", base_width=8, num_classes=10, **kw):
    spec = ModelSpec(model, num_classes=num_classes, in_chans=1, image_size=8, kwargs={"base_width": base_width})
    settings = {"lr": 0.05, "schedule": "cosine", "batch_size": 64, **kw}
    return TrainConfig(model=spec.to_dict(), dataset="digits", **settings)


def test_kd_loss_equals_the_hand_computed_value():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    teacher = torch.tensor([[4.0, 1.0, 0.0], [0.0, 0.0, 8.0]])
    targets = torch.tensor([0, 2])
    T, w = 4.0, 0.9

    def softmax(row, t):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for s, t, y in zip(student.tolist(), teacher.tolist(), targets.tolist()):
        p, q = softmax(t, T), softmax(s, T)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        ce += -math.log(softmax(s, 1.0)[y])
    expected = w * (kl / 2) * T * T + (1 - w) * ce / 2
    assert kd_loss(student, teacher, targets, T, w).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(student, teacher, targets, T, 0.0).item() == pytest.approx(F.cross_entropy(student, targets).item())
    assert kd_loss(student, student, targets, T, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_distilled_student_learns_from_a_trained_teacher(tmp_path):
    data = load_dataset("digits")
    # a teacher twice as wide as the student; a ResNet6 at width 8 passes 0.95 in 6 epochs, 5x cheaper than a ResNet10 at 16
    teacher = train(digits_config("resnet6", 8, epochs=6), tmp_path / "teacher", progress=False, data=data)
    assert teacher["test_acc"] > 0.85
    kd = train(digits_config("resnet6", 4, epochs=4, teacher=str(tmp_path / "teacher")), tmp_path / "kd",
               progress=False, data=data)
    plain = train(digits_config("resnet6", 4, epochs=4), tmp_path / "plain", progress=False, data=data)
    assert kd["test_acc"] > 0.7 and plain["test_acc"] > 0.5
    # the teacher changes what the student learns: same seed and data, different losses
    kd_lines = (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()
    plain_lines = (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()
    assert kd_lines[0] != plain_lines[0]


def _teacher_checkpoint(path, num_classes):
    cfg = digits_config(num_classes=num_classes, epochs=1).resolved()
    data = load_dataset("digits")
    state = {"epoch": 1, "best_val_acc": 0.0, "best_epoch": 0, "seconds": 0.0}
    atomic_torch_save(checkpoint(cfg, build_model(cfg), data, state), path)


def test_teacher_with_another_class_count_is_refused(tmp_path):
    _teacher_checkpoint(tmp_path / "teacher.pt", num_classes=5)
    with pytest.raises(RelucutError, match="teacher predicts 5 classes but digits has 10"):
        train(digits_config(epochs=1, teacher=str(tmp_path / "teacher.pt")), tmp_path / "run", progress=False)
    proc = run_cli("train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1",
                   "--teacher", tmp_path / "teacher.pt", "--out", tmp_path / "cli")
    assert_one_line_error(proc, "teacher predicts 5 classes")


def test_missing_teacher_is_refused(tmp_path):
    with pytest.raises(RelucutError, match="does not exist"):
        train(digits_config(epochs=1, teacher=str(tmp_path / "nope")), tmp_path / "run", progress=False)
