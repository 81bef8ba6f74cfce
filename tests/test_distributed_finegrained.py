"""SNL and SENet under torchrun (DDP, gloo on CPU) against one process at the same global batch.

Masks come out identical on every rank and meet the budget; the loss curve stays within a tolerance
of one process. The one-process masks are not reproduced bit for bit: each rank normalizes its
half of a batch with its own batch-norm statistics (SyncBatchNorm is CUDA-only), so the weights
drift apart a little.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.finegrained import TEACHER, tiny_data

from relucut.train import train

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "fixtures" / "ddp_finegrained.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the torchrun command runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "base"
    train(TEACHER, run, data=tiny_data(), progress=False)  # a teacher that learned: KD refuses one at chance
    return run


def _run(args: list[str], out: Path, method: str, base: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([*args, str(DRIVER), "--base", str(base), "--out", str(out), "--method", method],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _both(tmp_path: Path, base: Path, method: str):
    _run([sys.executable], tmp_path / "one", method, base)
    _run([*TORCHRUN, "--standalone", "--nproc_per_node", "2"], tmp_path / "ddp", method, base)
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    masks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    return one, ranks, masks, single


def _losses(run: Path, stage: str) -> list[float]:
    lines = (run / stage / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines]


def test_snl_under_torchrun_matches_one_process(tmp_path, base_run):
    one, ranks, masks, single = _both(tmp_path, base_run, "snl")
    assert [r["world"] for r in ranks] == [2, 2] and one["world"] == 1
    assert masks[0].keys() == masks[1].keys() == single.keys()
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])  # the same masks on every rank
    assert one["relus"] == ranks[0]["relus"] == ranks[1]["relus"] == 1000  # the budget, exactly
    assert ranks[0]["search_epochs_run"] == one["search_epochs_run"]
    for stage in ("search", "finetune"):  # rank 0 logs the loss over both ranks' images
        ddp, alone = _losses(tmp_path / "ddp", stage), _losses(tmp_path / "one", stage)
        assert len(ddp) == len(alone)
        assert all(abs(a - b) <= 0.2 * abs(b) for a, b in zip(ddp, alone)), (stage, ddp, alone)
    shared = sum(int((masks[0][k] & single[k]).sum()) for k in single)
    assert shared >= 0.65 * 1000  # 1000 of 1,920 positions (no stem ReLU): a random choice would share ~52 %
    for k in single:  # and each layer's count stays close
        assert abs(int(masks[0][k].sum()) - int(single[k].sum())) <= max(8, 0.2 * int(single[k].sum())), k


def test_senet_with_distance_masks_and_gb_under_torchrun(tmp_path, base_run):
    one, ranks, masks, single = _both(tmp_path, base_run, "senet")
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert ranks[0]["layer_budget"] == ranks[1]["layer_budget"] == one["layer_budget"]  # stage 1 is the same
    assert ranks[0]["shallow_blocks"] == one["shallow_blocks"] and one["shallow_blocks"]
    assert ranks[0]["relus"] == ranks[1]["relus"] == one["relus"]
    shared = sum(int((masks[0][k] & single[k]).sum()) for k in single)
    assert shared >= 0.8 * sum(int(v.sum()) for v in single.values())
    ddp, alone = _losses(tmp_path / "ddp", "masks"), _losses(tmp_path / "one", "masks")
    assert all(abs(a - b) <= 0.2 * abs(b) for a, b in zip(ddp, alone))


def test_relucut_snl_under_torchrun_claims_and_writes_once(tmp_path, base_run):
    """The command itself under torchrun: rank 0 holds the folder and writes the export and
    result.json, every rank trains, and the budget holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "snl"
    command = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "relucut", "snl", "resnet18", "--dataset",
               "digits", "--base-width", "4", "--limit-train", "192", "--budget", "1000", "--teacher", str(base_run),
               "--search-epochs", "1", "--finetune-epochs", "1", "--batch-size", "64", "--device", "cpu", "-q",
               "--out", str(out)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["result"]["relus"] == 1000 and (out / "export" / "recipe.json").is_file()
    assert json.loads((out / "finetune" / "final.json").read_text())["world_size"] == 2
