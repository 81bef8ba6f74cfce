"""The cross-method frontier resumes after SIGKILL, and reuses a finished run instead of training a copy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import child_pythonpath, run_cli
from fixtures.frontier import SPEC, frontier_base, frontier_config, frontier_teacher

from relucut.frontier_search import frontier
from relucut.methods.senet import SENetConfig

CLI = ["frontier", "resnet18", "--dataset", "digits", "--base-width", "4", "--epochs", "1", "--quiet"]


ENV = {"OMP_NUM_THREADS": "1"}


def _cli(*args):
    return run_cli(*args, env=ENV, subprocess=True)  # the run killed is one too: all start alike


@pytest.mark.kill
def test_a_killed_frontier_resumes_to_the_same_frontier(tmp_path):
    args = [*CLI, "--budget", "600", "--methods", "snl", "--limit-train", "96", "--batch-size", "32",
            "--search-epochs", "1", "--finetune-epochs", "2", "--device", "cpu", "--teacher", frontier_teacher()]
    whole = tmp_path / "whole"
    assert _cli(*args, "--out", whole).returncode == 0
    cut = tmp_path / "cut"
    full_env = {**os.environ, "PYTHONPATH": child_pythonpath(), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "relucut", *args, "--out", str(cut)], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "snl" / "600" / "finetune" / "last.pt").exists():  # in SNL's fine-tuning
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "frontier.json").exists()
    assert _cli(*args, "--out", cut).returncode == 0

    def rows(folder):
        doc = json.loads((folder / "frontier.json").read_text())
        return [(r["name"], r["relus"], r["val_acc"], r["test_acc"], r["on_frontier"]) for r in doc["points"]]

    assert rows(cut) == rows(whole)



@pytest.mark.slow
def test_senet_shallow_with_nothing_below_dth_reuses_senets_network(tmp_path):
    from relucut.train import load_data

    base = frontier_base()
    senet = SENetConfig(mask_epochs=1, finetune_epochs=1, milestones=[], dth=1e-9)  # no layer keeps fewer
    config = frontier_config(methods=["senet", "senet-shallow"], settings={"senet": senet})
    result = frontier(SPEC, config, data=load_data(base), out=tmp_path, train=base, teacher=frontier_teacher(),
                      progress=False)
    plain, shallow = (next(p for p in result.points if p.method == m) for m in ("senet", "senet-shallow"))
    assert shallow.run_dir == plain.run_dir == "senet/400" and shallow.export_dir == plain.export_dir
    assert (shallow.relus, shallow.val_acc, shallow.macs) == (plain.relus, plain.val_acc, plain.macs)
    assert not (tmp_path / "senet-shallow").exists()  # nothing trained twice
