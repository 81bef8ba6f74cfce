"""Ctrl-C during `relucut train`: a message that says how to go on, exit 130, and a rerun that says it
resumes and ends bit-identical to an uninterrupted run (issue 13, item 10)."""

import os
import subprocess
import sys

import pytest
import torch

# the real CLI entry point, with a real SIGINT sent to itself once epoch 2 has trained (before its
# checkpoint is written), so the interrupt lands at the same place on every machine
SCRIPT = """
import os, signal, sys
from relucut.train import loop

interrupt_after = int(sys.argv[1])
# as in a terminal, even where this test runs as a background job (whose SIGINT starts ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
run_epoch = loop.run_epoch

def run_epoch_then_interrupt(*args, **kwargs):
    metrics = run_epoch(*args, **kwargs)
    if args[1] == interrupt_after:  # run_epoch(run, epoch)
        os.kill(os.getpid(), signal.SIGINT)
    return metrics

loop.run_epoch = run_epoch_then_interrupt
sys.argv = ["relucut", *sys.argv[2:]]
from relucut.cli.app import main
main()
"""


def relucut(out, interrupt_after=-1):
    args = ["train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "3", "--limit-train", "128",
            "--lr", "0.05", "--schedule", "cosine", "--device", "cpu", "-q", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(interrupt_after), *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.kill
def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes_bit_identical(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert relucut(whole).returncode == 0

    stopped = relucut(cut, interrupt_after=1)
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip() == "interrupted after epoch 1; rerun the same command to resume"
    assert "Traceback" not in stopped.stderr and not (cut / "final.json").exists()
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 1

    resumed = relucut(cut)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch 2 of 3 ({cut})" in resumed.stderr
    a, b = (torch.load(d / "last.pt", weights_only=False) for d in (whole, cut))
    assert a["state"]["epoch"] == b["state"]["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert (whole / "final.json").read_text().split('"seconds"')[0] == (cut / "final.json").read_text().split('"seconds"')[0]
