"""The DeepReDuce search end to end on digits: kill mid-candidate, rerun, same frontier; budgets."""

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, child_pythonpath, run_cli

from relucut import ModelSpec
from relucut.deepreduce.candidates import generate_candidates, relu_counts

# a 3-stage ResNet with one block per stage: 1 teacher + 3 stage networks + 10 candidates; the
# teacher learns (~49 % validation: KD refuses one at chance)
TINY = ["resnet20", "--dataset", "digits", "--blocks", "1,1,1", "--base-width", "4", "--epochs", "2",
        "--batch-size", "32", "--lr", "0.1", "--schedule", "cosine", "--limit-train", "256",
        "--criticality-kd-only", "--threads", "1", "--device", "cpu", "--quiet"]


def search_cmd(out, *extra):
    return [sys.executable, "-m", "relucut", "deepreduce", *TINY, "--out", str(out), *extra]


def frontier_of(out):
    doc = json.loads((Path(out) / "frontier.json").read_text())
    keep = ("name", "relus", "macs", "val_acc", "test_acc")
    return [{k: r[k] for k in keep} for r in doc["frontier"]], [{k: r[k] for k in keep} for r in doc["candidates"]]


def finals(out):
    """mtime of every final.json: a retrained run would rewrite its own."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in Path(out).rglob("final.json")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "whole"
    proc = subprocess.run(search_cmd(out), check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


@pytest.mark.slow  # the module's search fixture trains 14 networks
def test_search_writes_every_output(uninterrupted):
    out, stdout = uninterrupted
    for name in ("search.json", "criticality.json", "criticality.md", "frontier.json", "frontier.csv",
                 "frontier.md", "candidates.csv", "pareto.png"):
        assert (out / name).is_file(), name
    crit = json.loads((out / "criticality.json").read_text())
    assert sorted(crit["order"]) == ["s1", "s2", "s3"] and crit["schedule"]["proxy"] is False
    assert min(r["score"] for r in crit["stages"]) == 0.0  # the least critical stage scores zero
    front, cands = frontier_of(out)
    assert len(cands) == 10 and 1 <= len(front) <= 10
    assert len(list((out / "candidates").iterdir())) == 10
    # one results vocabulary: accuracy as fractions in [0, 1] in every JSON and CSV
    assert all(0.0 <= r[k] <= 1.0 for r in cands for k in ("val_acc", "test_acc"))
    assert all(0.0 <= r["val_acc_kd"] <= 1.0 for r in crit["stages"]) and 0.0 <= crit["teacher"]["val_acc"] <= 1.0
    assert all(0.0 <= float(row["val_acc"]) <= 1.0 for row in csv.DictReader(open(out / "candidates.csv")))
    assert "Pareto frontier" in stdout and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for r in cands:
        cfg = json.loads((out / "candidates" / r["name"] / "config.json").read_text())
        assert cfg["teacher"] == str((out / "teacher").resolve()) and cfg["plan"] is not None


@pytest.mark.kill
def test_killed_search_resumes_to_the_same_frontier(uninterrupted, tmp_path):
    whole, _ = uninterrupted
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    proc = subprocess.Popen(search_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    cand_dir = out / "candidates"
    interrupted = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        dirs = list(cand_dir.iterdir()) if cand_dir.is_dir() else []
        done = [d for d in dirs if (d / "final.json").is_file()]
        running = [d for d in dirs if (d / "config.json").is_file() and not (d / "final.json").is_file()]
        if done and running:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            interrupted = running[0]
            break
        time.sleep(0.01)
    assert interrupted is not None, "the search ended before it could be killed mid-candidate"
    assert not (out / "frontier.json").exists() and not (interrupted / "final.json").exists()
    before = finals(out)
    assert any(k.startswith("candidates/") for k in before)

    rerun = subprocess.run(search_cmd(out), check=False, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = finals(out)
    assert all(after[k] == t for k, t in before.items()), "a finished run was trained again"
    assert (interrupted / "final.json").is_file()
    assert frontier_of(out) == frontier_of(whole)


@pytest.mark.slow
def test_budget_picks_the_best_network_without_retraining(uninterrupted):
    out, _ = uninterrupted
    before = finals(out)
    _, cands = frontier_of(out)
    budget = sorted(r["relus"] for r in cands)[len(cands) // 2]
    proc = run_cli("deepreduce", *TINY, "--out", out, "--budget", str(budget), check=True)
    best = json.loads((out / "best.json").read_text())
    fits = [r for r in cands if r["relus"] <= budget]
    assert best["relus"] <= budget and best["val_acc"] == max(r["val_acc"] for r in fits)
    assert "best under the budget" in proc.stdout
    assert finals(out) == before


def test_budget_below_every_candidate_is_a_one_line_error(tmp_path):
    spec = ModelSpec("resnet20", num_classes=10, in_chans=1, image_size=8, kwargs={"blocks": [1, 1, 1], "base_width": 4})
    stages = ("stem", "s1", "s2", "s3")
    # the last culling iteration of some order holds the fewest ReLUs: only its stage is left
    # (resnet20 has no strided-stem rho_mode: the search pools its rho candidates, as here)
    last = [c for order in itertools.permutations(["s1", "s2", "s3"])
            for c in generate_candidates(order, stages, rho_mode="pool") if c.iteration == 2 and c.step == "alpha+rho"]
    smallest = min(relu_counts(last, spec).values())
    proc = run_cli("deepreduce", *TINY, "--out", tmp_path / "b", "--budget", str(smallest - 1))
    assert_one_line_error(proc, f"smallest reachable is {smallest:,} ReLUs", "--budget")
    assert not (tmp_path / "b" / "teacher").exists()  # refused before any training


@pytest.mark.slow
def test_changed_settings_refuse_to_mix_into_a_search(uninterrupted):
    out, _ = uninterrupted
    args = [a if a != "0.1" else "0.02" for a in TINY]
    proc = run_cli("deepreduce", *args, "--out", out)
    assert_one_line_error(proc, "different train", "new --out")


@pytest.mark.slow
def test_criticality_command_reads_the_finished_stage_runs(uninterrupted):
    out, _ = uninterrupted
    before = finals(out)
    proc = run_cli("criticality", *TINY, "--out", out, check=True)
    order = json.loads((out / "criticality.json").read_text())["order"]
    assert "Order, least to most critical: " + " < ".join(s.upper() for s in order) in proc.stdout
    assert finals(out) == before


@pytest.mark.slow
def test_saved_criticality_and_teacher_skip_their_phases(uninterrupted, tmp_path):
    whole, _ = uninterrupted
    _, cands = frontier_of(whole)
    smallest = min(r["relus"] for r in cands)
    out = tmp_path / "reuse"
    run_cli("deepreduce", *TINY, "--out", out, "--criticality", whole / "criticality.json",
            "--teacher", whole / "teacher", "--budget", str(smallest), check=True)
    assert not (out / "teacher").exists() and not (out / "criticality").exists()
    trained = [p.name for p in (out / "candidates").iterdir()]
    assert trained and all(r["relus"] <= smallest for r in json.loads((out / "frontier.json").read_text())["candidates"])
    cfg = json.loads((out / "candidates" / trained[0] / "config.json").read_text())
    assert cfg["teacher"] == str((whole / "teacher").resolve())
    assert json.loads((out / "frontier.json").read_text())["criticality_order"] == \
        json.loads((whole / "criticality.json").read_text())["order"]


@pytest.mark.slow
def test_a_criticality_file_for_another_model_is_refused_before_training(uninterrupted, tmp_path):
    whole, _ = uninterrupted
    other = ["resnet18" if a == "resnet20" else a for a in TINY if a not in ("--blocks", "1,1,1")]
    proc = run_cli("deepreduce", *other, "--out", tmp_path / "o", "--criticality", whole / "criticality.json")
    assert_one_line_error(proc, "was computed for resnet20", "not for resnet18")
    assert not (tmp_path / "o").exists()
