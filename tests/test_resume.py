"""A run killed (SIGKILL) after epoch k and restarted ends bit-identical to an uninterrupted run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import child_pythonpath


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kill]

SCRIPT = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from relucut.models import ModelSpec
from relucut.train import TrainConfig, train

run_dir, kill_at = sys.argv[1], int(sys.argv[2])
spec = ModelSpec("resnet6", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 8})
config = TrainConfig(model=spec.to_dict(), dataset="digits", epochs=4, lr=0.05, momentum=0.9,
                     schedule="step", milestones=[2], batch_size=64, limit_train=384, seed=7)

class KillAtEpochStart:
    # epoch `kill_at` starts only after epoch kill_at-1 wrote last.pt: a kill between epochs
    def on_epoch_start(self, epoch, model):
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

def noisy(ctx):
    # draws from the global RNG, so the resumed run must restore it to match
    return 1e-2 * torch.rand(()) * ctx.logits.float().pow(2).mean()

final = train(config, run_dir, callbacks=[KillAtEpochStart()], extra_loss=noisy, progress=False)
print(json.dumps(final))
"""


def run(run_dir, kill_at=-1):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    return subprocess.run([sys.executable, "-c", "import json\n" + SCRIPT, str(run_dir), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=300)


def metrics(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in lines]


def test_killed_run_resumes_to_identical_metrics_and_weights(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run(whole).returncode == 0
    proc = run(killed, kill_at=2)
    assert proc.returncode == -9  # really killed, no clean-up ran
    assert not (killed / "final.json").exists()
    assert len(metrics(killed)) == 2
    assert torch.load(killed / "last.pt", weights_only=True)["state"]["epoch"] == 2
    resumed = run(killed)
    assert resumed.returncode == 0, resumed.stderr

    assert metrics(killed) == metrics(whole)
    final_whole = json.loads((whole / "final.json").read_text())
    final_killed = json.loads((killed / "final.json").read_text())
    final_whole.pop("seconds"), final_killed.pop("seconds")
    assert final_killed == final_whole
    for name in ("last.pt", "best.pt"):
        a = torch.load(whole / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    a = torch.load(whole / "last.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(killed / "last.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(a[i]["momentum_buffer"], b[i]["momentum_buffer"]) for i in a)


def test_kill_between_last_and_best_checkpoint_is_repaired(tmp_path):
    """best.pt of the epoch that last.pt records is rebuilt when the kill came before it was written."""
    from relucut.models import ModelSpec
    from relucut.train import TrainConfig, train

    spec = ModelSpec("resnet6", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 4})
    cfg = TrainConfig(model=spec.to_dict(), dataset="digits", epochs=1, lr=0.05, batch_size=64, limit_train=128)
    first = train(cfg, tmp_path, progress=False)
    (tmp_path / "best.pt").unlink()  # as if killed right after last.pt
    again = train(cfg, tmp_path, progress=False)
    assert again["test_acc"] == first["test_acc"]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_a_busy_or_corrupt_run_dir_is_refused_in_one_line(tmp_path):
    from relucut.errors import RelucutError
    from relucut.rundir import claim
    from relucut.train import TrainConfig, train

    cfg = TrainConfig(model={"name": "resnet6", "num_classes": 10, "in_chans": 1, "image_size": 8,
                             "kwargs": {"base_width": 4}}, dataset="digits", epochs=1, limit_train=64)
    with claim(tmp_path / "busy", {"other": "process"}):
        with pytest.raises(RelucutError, match="in use by another relucut run"):
            train(cfg, tmp_path / "busy", progress=False)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    with pytest.raises(RelucutError, match="corrupt"):
        train(cfg, tmp_path / "corrupt", progress=False)
    assert not (tmp_path / "corrupt" / "last.pt").exists()
