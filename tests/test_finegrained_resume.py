"""SNL (also with polynomial linearization) and SENet killed (SIGKILL) in the middle of each stage, rerun,
end bit-identical on the CPU."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import child_pythonpath

pytestmark = pytest.mark.kill

SCRIPT = r"""
import json, os, random, signal, sys
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
from fixtures.finegrained import RESUME_BASE as BASE, SPEC, tiny_data
from relucut.finegrained import pipeline
from relucut.methods.senet import SENetConfig
from relucut.methods.snl import SNLConfig

method, out, kill_label, kill_at, teacher = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
steps = {}


class KillAt:
    # counts the steps of one stage; SIGKILL mid-epoch: that epoch's steps are lost
    def __init__(self, label):
        self.label = label

    def after_step(self, step, model):
        steps[self.label] = steps.get(self.label, 0) + 1
        if self.label == kill_label and steps[self.label] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def noisy(extra_loss):
    # draws from the three global RNGs, so a resumed run must restore them to match
    def loss(ctx):
        base = extra_loss(ctx) if extra_loss else ctx.logits.new_zeros(())
        if isinstance(base, dict):
            base = sum(base.values())
        return base + 1e-3 * ctx.logits.mean() * float(torch.rand(()) + np.random.rand() + random.random())
    return loss


module = sys.modules["relucut.finegrained." + method.split("-")[0]]
real_train = module.train


def train(cfg, run_dir, *, label="", callbacks=(), extra_loss=None, **kw):
    return real_train(cfg, run_dir, label=label, callbacks=[*callbacks, KillAt(label)],
                      extra_loss=noisy(extra_loss), **kw)


module.train = train
if method.startswith("snl"):
    cfg = SNLConfig(budget=1200, search_epochs=4, finetune_epochs=2, milestones=[1], mask_lr=0.2,
                    l1_init=1.0, l1_growth=2.0, check_every=2,
                    linearize="poly2" if method == "snl-poly2" else "identity")
    result = pipeline.run_snl(SPEC, tiny_data(), Path(out), cfg, base=BASE, teacher=teacher, progress=False)
else:
    cfg = SENetConfig(budget=900, mask_epochs=3, mask_lr=0.2, finetune_epochs=3, milestones=[2],
                      shallow=True, dth=0.3)
    result = pipeline.run_senet(SPEC, tiny_data(), Path(out), cfg, base=BASE, teacher=teacher, progress=False)
result.pop("seconds")
print(json.dumps({"result": result, "steps": steps}))
"""

STEPS_PER_EPOCH = 3  # 192 images, batch 64
# poly2 in fine-tuning: the stage that rebuilds its network from plan.json, coefficients included
STAGES = {"snl": ("SNL search", "SNL fine-tune"), "snl-poly2": ("SNL fine-tune",),
          "senet": ("SENet masks", "SENet fine-tune")}
RUN_DIRS = {"SNL search": "search", "SNL fine-tune": "finetune", "SENet masks": "masks", "SENet fine-tune": "finetune"}


def run(method, out, teacher, kill_label="", kill_at=-1):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    return subprocess.run([sys.executable, "-c", SCRIPT, method, str(out), kill_label, str(kill_at), str(teacher)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """One all-ReLU teacher for every run: the stages are what these tests kill (a base run's own
    kill and resume: test_resume.py). It learns (~45 % validation; KD refuses a teacher at chance)."""
    from fixtures.finegrained import RESUME_BASE, SPEC, tiny_data

    from relucut.train import train
    from relucut.train.base import base_config as on_data

    run_dir, data = tmp_path_factory.mktemp("teacher") / "base", tiny_data()
    torch.set_num_threads(1)
    train(on_data(SPEC, data, RESUME_BASE), run_dir, data=data, progress=False)  # as the methods would train it
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, teacher):
    out = {}
    for method in STAGES:
        path = tmp_path_factory.mktemp(method)
        proc = run(method, path, teacher)
        assert proc.returncode == 0, proc.stderr
        out[method] = path, json.loads(proc.stdout.splitlines()[-1])
    return out


@pytest.mark.parametrize("method, stage", [(m, s) for m, stages in STAGES.items() for s in stages])
def test_killed_mid_stage_resumes_bit_identical(uninterrupted, teacher, tmp_path, method, stage):
    whole, straight = uninterrupted[method]
    kill_at = STEPS_PER_EPOCH + 2  # second step of the stage's second epoch
    assert straight["steps"][stage] > kill_at, "the stage must still be running when it is killed"

    proc = run(method, tmp_path, teacher, stage, kill_at)
    assert proc.returncode == -9  # really killed, no clean-up ran
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "export").exists()
    assert load(tmp_path / RUN_DIRS[stage] / "last.pt")["state"]["epoch"] == 1

    proc = run(method, tmp_path, teacher)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout.splitlines()[-1])
    # it went on after the saved epoch instead of training the stage from its start again
    assert resumed["steps"].get(stage, 0) == straight["steps"][stage] - STEPS_PER_EPOCH
    assert resumed["result"] == straight["result"]
    assert_same_tensors(load(whole / "export" / "model.pt"), load(tmp_path / "export" / "model.pt"))
    assert_same_tensors(load(whole / RUN_DIRS[stage] / "last.pt")["model"],
                        load(tmp_path / RUN_DIRS[stage] / "last.pt")["model"])
    if method.startswith("snl"):
        assert straight["result"]["l1_final"] > 1.0  # the controller did raise the coefficient
        assert (whole / "export" / "plan.json").read_text() == (tmp_path / "export" / "plan.json").read_text()
