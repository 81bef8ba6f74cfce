"""Fine-grained runs interrupted in the middle of mask learning and rerun end bit-identical."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TESTS
from fixtures.finegrained import SPEC, tiny_data, trained_base

from relucut.finegrained.loop import EpochHooks
from relucut.finegrained.senet import SENetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = r"""
import dataclasses, json, os, random, signal, sys
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
from fixtures.finegrained import SPEC, tiny_data
from relucut.finegrained.pipeline import run_snl
from relucut.finegrained.snl import SNLConfig

snl_module = sys.modules["relucut.finegrained.snl"]  # the package exports a function of that name

out, kill_at = sys.argv[1], int(sys.argv[2])
steps = {"search": 0}
real_run_epochs = snl_module.run_epochs

def run_epochs(model, data, loss_fn, *, hooks=None, label="", **kw):
    def noisy(x, y):
        # draws from the three global RNGs, so a resumed run must restore them to match
        return loss_fn(x, y) * (1 + 1e-3 * (torch.rand(()) + np.random.rand() + random.random()))
    if label == "SNL search":
        search_step = hooks.after_step
        def after_step():
            steps["search"] += 1
            if steps["search"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch: that epoch's steps are lost
            return search_step()
        hooks = dataclasses.replace(hooks, after_step=after_step)
    return real_run_epochs(model, data, noisy, hooks=hooks, label=label, **kw)

snl_module.run_epochs = run_epochs
# 192 images, batch 64: 3 steps an epoch; the L1 controller checks every 2 steps
cfg = SNLConfig(budget=1200, search_epochs=4, finetune_epochs=2, milestones=[1], batch_size=64, mask_lr=0.2,
                l1_init=1.0, l1_growth=2.0, check_every=2, seed=3)
result = run_snl(SPEC, tiny_data(), Path(out), cfg, base_epochs=1, progress=False)
result.pop("seconds")
print(json.dumps({"result": result, "search_steps": steps["search"]}))
"""

STEPS_PER_EPOCH = 3


def run(out, kill_at=-1):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(kill_at)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_snl_killed_mid_search_resumes_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = run(whole)
    assert proc.returncode == 0, proc.stderr
    uninterrupted = json.loads(proc.stdout.splitlines()[-1])
    total_steps = uninterrupted["search_steps"]
    kill_at = STEPS_PER_EPOCH + 2  # second step of the second epoch
    assert total_steps > kill_at + 1, "the search must still be running when it is killed"

    proc = run(killed, kill_at)
    assert proc.returncode == -9  # really killed, no clean-up ran
    assert not (killed / "snl_search.pt").exists() and not (killed / "result.json").exists()
    assert load(killed / "snl_search_progress.pt")["epoch"] == 1

    proc = run(killed)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout.splitlines()[-1])
    # it went on after the saved epoch rather than searching from the start again
    assert resumed["search_steps"] == total_steps - STEPS_PER_EPOCH
    assert resumed["result"] == uninterrupted["result"]
    assert uninterrupted["result"]["l1_final"] > 1.0  # the controller did raise the coefficient

    a, b = load(whole / "snl_search.pt"), load(killed / "snl_search.pt")
    assert a["result"] == b["result"] and a["result"]["history"]
    assert_same_tensors(a["masks"], b["masks"])
    assert_same_tensors(a["state"], b["state"])
    assert_same_tensors(load(whole / "snl_finetune.pt")["model"], load(killed / "snl_finetune.pt")["model"])
    assert_same_tensors(load(whole / "export" / "model.pt"), load(killed / "export" / "model.pt"))
    assert (whole / "export" / "plan.json").read_text() == (killed / "export" / "plan.json").read_text()


class Interrupted(Exception):
    pass


def test_senet_stage2_interrupted_mid_epoch_resumes_bit_identical(tmp_path, monkeypatch):
    senet_module = sys.modules["relucut.finegrained.senet"]  # the package exports a function of that name
    data = tiny_data()
    base = trained_base(data)
    cfg = SENetConfig(budget=900, mask_epochs=3, mask_lr=0.2, finetune_epochs=1, milestones=[], batch_size=64)
    straight = copy.deepcopy(base)
    senet_module.senet(straight, base, data, SPEC.input_size, cfg, progress=False, workdir=tmp_path / "whole")

    real_run_epochs = senet_module.run_epochs
    steps = {"masks": 0, "stop_at": STEPS_PER_EPOCH + 2}

    def counting(*args, label="", hooks=None, **kw):
        if label == "SENet masks":
            def after_step():
                steps["masks"] += 1
                if steps["masks"] == steps["stop_at"]:
                    raise Interrupted
                return False
            hooks = EpochHooks(after_step=after_step)
        return real_run_epochs(*args, label=label, hooks=hooks, **kw)

    monkeypatch.setattr(senet_module, "run_epochs", counting)
    work = tmp_path / "killed"
    with pytest.raises(Interrupted):
        senet_module.senet(copy.deepcopy(base), base, data, SPEC.input_size, cfg, progress=False, workdir=work)
    assert not (work / "senet_stage2.pt").exists()
    assert load(work / "senet_stage2_progress.pt")["epoch"] == 1

    steps.update(masks=0, stop_at=-1)
    resumed = copy.deepcopy(base)
    senet_module.senet(resumed, base, data, SPEC.input_size, cfg, progress=False, workdir=work)
    assert steps["masks"] == 2 * STEPS_PER_EPOCH  # only the epochs after the saved one ran
    assert_same_tensors(load(tmp_path / "whole" / "senet_stage2.pt")["masks"], load(work / "senet_stage2.pt")["masks"])
    assert_same_tensors(resumed.state_dict(), straight.state_dict())
