"""relucut.rundir: atomic writes, and claiming a run directory (settings check, corrupt file, lock)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from relucut.errors import RelucutError
from relucut.rundir import atomic_torch_save, atomic_write_json, atomic_write_text, claim, differences

SETTINGS = {"format": "relucut.test", "version": 1, "model": {"name": "resnet18", "kwargs": {"base_width": 8}},
            "lr": 0.1, "device": "cpu"}

HOLDER = """
import sys
from relucut.rundir import claim
held = claim(sys.argv[1], {"x": 1})
print("held", flush=True)
sys.stdin.read()  # holds the folder until the test closes stdin (or kills this process)
"""


def one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_atomic_writes_replace_the_file_and_leave_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.txt", "old")
    atomic_write_text(tmp_path / "sub" / "a.txt", "new")
    atomic_write_json(tmp_path / "sub" / "b.json", {"acc": 0.5})
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "sub" / "c.pt")
    assert (tmp_path / "sub" / "a.txt").read_text() == "new"
    assert json.loads((tmp_path / "sub" / "b.json").read_text()) == {"acc": 0.5}
    assert torch.equal(torch.load(tmp_path / "sub" / "c.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt", "b.json", "c.pt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"bad": object()})
    assert json.loads((tmp_path / "r.json").read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_old_import_paths_still_work():
    from relucut.plan import atomic_write_text as from_plan
    from relucut.train.checkpoint import atomic_torch_save as from_checkpoint

    assert from_plan is atomic_write_text and from_checkpoint is atomic_torch_save


def test_claim_writes_the_settings_and_a_rerun_with_the_same_resumes(tmp_path):
    run = tmp_path / "new" / "run"
    with claim(run, SETTINGS) as held:
        assert held.held and json.loads((run / "config.json").read_text()) == SETTINGS
    assert not held.held
    with claim(run, {**SETTINGS, "model": dict(SETTINGS["model"])}):  # equal values, new objects
        pass
    with claim(run, {**SETTINGS, "device": "cuda"}, runtime=("device",)):
        assert json.loads((run / "config.json").read_text())["device"] == "cuda"  # the latest is recorded


def test_differing_settings_are_named_as_dotted_keys(tmp_path):
    claim(tmp_path, SETTINGS).release()
    other = {**SETTINGS, "lr": 0.2, "model": {"name": "resnet18", "kwargs": {"base_width": 16}}, "device": "cuda"}
    with pytest.raises(RelucutError) as err:
        claim(tmp_path, other, runtime=("device",))
    assert "different lr, model.kwargs.base_width;" in one_line(err) and "new --out" in one_line(err)
    assert json.loads((tmp_path / "config.json").read_text()) == SETTINGS  # left as it was


def test_differences_covers_added_and_removed_keys_and_nested_runtime():
    saved = {"a": 1, "train": {"lr": 0.1, "device": "cpu"}, "gone": 1}
    mine = {"a": 1, "train": {"lr": 0.1, "device": "cuda"}, "new": 2}
    assert differences(saved, mine) == ["gone", "new", "train.device"]
    assert differences(saved, mine, runtime=("train.device", "gone")) == ["new"]


def test_an_option_added_since_and_left_unset_is_no_difference():
    saved = {"senet": {"budget": 10}}  # written before SENetConfig.layer_budget existed
    assert differences(saved, {"senet": {"budget": 10, "layer_budget": None}}) == []
    assert differences(saved, {"senet": {"budget": 10, "layer_budget": {"s1": 10}}}) == ["senet.layer_budget"]
    assert differences({"senet": {"budget": 10, "layer_budget": None}}, saved) == ["senet.layer_budget"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff"])
def test_a_corrupt_settings_file_is_refused(tmp_path, content):
    (tmp_path / "search.json").write_text(content)
    with pytest.raises(RelucutError) as err:
        claim(tmp_path, SETTINGS, file="search.json")
    assert "search.json' is corrupt" in one_line(err) and "--out" in one_line(err)


def test_a_file_or_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RelucutError) as err:
        claim(tmp_path / "f", SETTINGS)
    assert "is a file, not a folder; choose another --out" in one_line(err)
    with pytest.raises(RelucutError) as err:
        claim(tmp_path / "f" / "below", SETTINGS)
    assert "cannot create" in one_line(err)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere: pretend
    with pytest.raises(RelucutError) as err:
        claim(tmp_path / "d", SETTINGS)
    assert "is not writable; fix its permissions or choose another --out" in one_line(err)


def test_a_held_folder_is_refused_until_released(tmp_path):
    held = claim(tmp_path, SETTINGS)
    with pytest.raises(RelucutError) as err:
        claim(tmp_path, SETTINGS)
    assert one_line(err) == (f"'{tmp_path}' is in use by another relucut run (pid {os.getpid()}); wait for it "
                             "or choose another --out")
    with claim(tmp_path / "inner", {"y": 1}):  # a run may hold folders inside its own
        pass
    held.release()
    claim(tmp_path, SETTINGS).release()


def holder(run):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_holding_the_folder_is_named_by_pid(tmp_path):
    proc = holder(tmp_path)
    try:
        with pytest.raises(RelucutError, match=f"in use by another relucut run \\(pid {proc.pid}\\)"):
            claim(tmp_path, {"x": 1})
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    claim(tmp_path, {"x": 1}).release()  # its exit released the folder


@pytest.mark.kill
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    claim(tmp_path, {"x": 1}).release()
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
