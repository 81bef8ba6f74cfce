"""bench/reproduce_cifar10.py: the data parts and a smoke run of the whole reproduction on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from reproduce_cifar10 import load_parts, part_layout, synthetic_parts  # noqa: E402

RUNS = ("teacher", "snl-50k", "senet-gb-50k", "deepreduce-s2s3s4", "snl-12.9k", "senet-gb-82k")


def test_parts_fit_one_transfer_each_and_part_one_holds_the_test_images():
    layout = part_layout()
    assert [p["train"] for p in layout] == [[0, 11_667], [11_667, 28_334], [28_334, 45_000]]
    assert layout[0]["test"] == [45_000, 50_000] and layout[1]["test"] is None
    for p in layout:
        images = p["train"][1] - p["train"][0] + (5_000 if p["test"] else 0)
        assert images * 3 * 32 * 32 < 50 * 2**20  # one part plus the working tree under 64 MiB


def test_load_parts_uses_the_parts_present_and_refuses_corrupt_ones(tmp_path):
    synthetic_parts(tmp_path, train=60, held_out=12)
    data, present = load_parts(tmp_path)
    assert present["parts"] == [1, 2, 3] and len(data.train) == 60
    assert len(data.test) == 12 and len(data.val) == 0
    labels = np.concatenate([np.load(tmp_path / f"cifar10-part{k}" / "labels.npy") for k in (1, 2, 3)])
    first = part_layout(3, 60, 12)[0]["train"][1]
    assert data.test.labels.tolist() == labels[first:first + 12].tolist()  # part 1's tail
    (tmp_path / "cifar10-part3" / "images.npy").unlink()
    (tmp_path / "cifar10-part3" / "part.json").unlink()
    data, present = load_parts(tmp_path)
    assert present["parts"] == [1, 2] and len(data.train) == part_layout(3, 60, 12)[1]["train"][1]
    images = tmp_path / "cifar10-part2" / "images.npy"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF
    images.write_bytes(bytes(raw))
    with pytest.raises(SystemExit, match="cifar10-part2/images.npy is corrupt"):
        load_parts(tmp_path)
    for k in (1, 2):
        (tmp_path / f"cifar10-part{k}" / "part.json").unlink()
    with pytest.raises(SystemExit, match="holds the test images"):
        load_parts(tmp_path)


def _smoke(out: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "reproduce_cifar10.py"), "run", "--smoke",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "reproduce_cifar10.json").read_text())


def test_smoke_run_trains_every_stage_and_writes_the_table(tmp_path):
    result = _smoke(tmp_path)
    assert list(result["runs"]) == list(RUNS) and result["skipped"] == []
    runs = result["runs"]
    # a 2-wide ResNet18 at 32x32 is 1/32 of the full width: 17,408 ReLUs, 15,360 without the stem
    assert runs["teacher"]["relus"] == 17_408 and runs["teacher"]["relus_without_stem"] == 15_360
    assert runs["snl-50k"]["relus"] == runs["snl-50k"]["relus_without_stem"] == round(50_000 / 32)
    assert runs["snl-12.9k"]["relus"] == round(12_900 / 32)
    assert runs["senet-gb-50k"]["relus"] <= round(50_000 / 32)  # gated branching takes some away
    assert runs["deepreduce-s2s3s4"]["relus"] == 229_376 // 32
    assert all(0 <= r["test_acc"] <= 1 and r["s_per_epoch"] > 0 for r in runs.values())
    table = (tmp_path / "reproduce_cifar10.md").read_text()
    assert "SMOKE RUN" in table and "92.27 at 49.4K" in table
    committed = REPO / "bench" / "results" / "reproduce_cifar10.json"  # a smoke run never writes there
    assert not committed.exists() or not json.loads(committed.read_text())["setting"]["smoke"]


@pytest.mark.slow
def test_a_run_out_of_time_still_reports_what_it_measured(tmp_path):
    result = _smoke(tmp_path, "--time-budget", "0")
    assert list(result["runs"]) == ["teacher"]  # always trained; every other run would overrun
    assert [s.split(":")[0] for s in result["skipped"]] == list(RUNS[1:])
