"""Write failures are one line naming the path and the fix, and temp files do not pile up (issue 19,
item 4).

The full disk is real: ``metrics.jsonl`` is a link to ``/dev/full``, whose writes fail with ENOSPC
in the kernel. A read-only folder is real where the tests do not run as root (chmod); root writes
through permissions, so there a write is made to fail as a read-only mount would (EROFS).
"""

import errno
import json
import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from relucut.errors import RelucutError
from relucut.rundir import atomic_write_text, claim, remove_temp_files

TRAIN = ["train", "resnet6", "--dataset", "digits", "--base-width", "4", "--lr", "0.05", "-q", "--epochs"]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread (conftest's fixture)."""


def test_a_full_disk_under_training_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink("/dev/full", run / "metrics.jsonl")  # every write there: ENOSPC, from the kernel
    proc = run_cli(*TRAIN, "2", "--out", run)
    assert_one_line_error(proc, f"cannot write '{run / 'metrics.jsonl'}'", "No space left on device",
                          "free space there")
    assert proc.returncode == 2
    assert not (run / "final.json").exists() and not (run / "last.pt").exists()  # the epoch was not kept
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def _read_only(folder: Path, monkeypatch) -> None:
    """Makes writes into ``folder`` fail as on a read-only disk: for real by chmod unless root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's name)
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    run = tmp_path / "run"
    first = run_cli(*TRAIN, "1", "--out", run)  # one epoch, then the folder turns read-only
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    from relucut.train import TrainConfig, train

    cfg = TrainConfig.load(run / "config.json")
    _read_only(run, monkeypatch)
    try:
        refusal = (r"cannot write '.*run/config.json' \(Read-only file system\); make that folder writable"
                   r"|'.*run' is not writable; fix its permissions")  # the latter: chmod, as a non-root user
        with pytest.raises(RelucutError, match=refusal):
            train(cfg, run, progress=False)
    finally:
        run.chmod(0o755)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing half-written, nothing lost


def test_a_read_only_export_folder_is_one_line(tmp_path, monkeypatch):
    from relucut.export import export_model
    from relucut.models.registry import ModelSpec
    from relucut.plan import ReLUPlan

    parent = tmp_path / "ro"
    parent.mkdir()
    if os.geteuid() != 0:
        parent.chmod(0o555)
    else:
        import tempfile

        def mkdtemp(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(parent))

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    try:
        with pytest.raises(RelucutError, match="cannot write .*make that folder writable"):
            export_model(ModelSpec("resnet6", 10, 1, 8, {"base_width": 4}), ReLUPlan(), None, parent / "exp",
                         onnx=False)
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


def test_the_cli_turns_any_disk_error_into_one_line(tmp_path, monkeypatch):
    """Writes outside relucut.rundir (a library's own files) are caught at the top: one line, exit 2."""
    import relucut.cli.count as count_cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "somewhere.bin"))

    monkeypatch.setattr(count_cli, "print_report", full)
    proc = run_cli("count", "resnet6")
    assert_one_line_error(proc, "somewhere.bin", "No space left on device", "free space")
    assert proc.returncode == 2


def test_temp_files_of_killed_writers_go_on_the_next_claim(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [".pareto.png.ab12cd_9.tmp", ".last.pt.x1y2z3w4.tmp", ".frontier.png.00000000.tmp"]
    for name in stale:
        (folder / name).write_bytes(b"")
    (folder / ".export.qwertyui.tmp").mkdir()  # a half-written export folder
    (folder / ".export.qwertyui.tmp" / "model.pt").write_bytes(b"half")
    keep = ["pareto.png", ".hidden.tmp", "notes.tmp", ".lock.txt"]
    for name in keep:
        (folder / name).write_bytes(b"x")
    with claim(folder, {"a": 1}):
        names = {p.name for p in folder.iterdir()}
    assert names == {*keep, "config.json", ".lock"}


def test_a_killed_writer_leaves_a_temp_file_that_the_rerun_removes(tmp_path):
    """A real kill between the temp file and the rename: the rerun of the same command cleans it."""
    import subprocess
    import sys

    run = tmp_path / "run"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from relucut.rundir import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'')\n"
        "    os.kill(os.getpid(), 9)\n"
        "atomic_write(Path(sys.argv[1]) / 'pareto.png', write)\n"
    )
    run.mkdir()
    subprocess.run([sys.executable, "-c", script, str(run)], check=False, timeout=60)
    left = [p.name for p in run.iterdir()]
    assert len(left) == 1 and left[0].startswith(".pareto.png.") and left[0].endswith(".tmp")
    proc = run_cli(*TRAIN, "1", "--out", run)
    assert proc.returncode == 0, proc.stderr
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_remove_temp_files_names_what_it_removed(tmp_path):
    (tmp_path / ".a.json.abcdefgh.tmp").write_text("{")
    assert remove_temp_files(tmp_path) == [".a.json.abcdefgh.tmp"]
    assert remove_temp_files(tmp_path) == []


def test_an_atomic_write_into_a_full_file_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "final.json"
    target.write_text(json.dumps({"old": True}))

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RelucutError, match="cannot write .*final.json.*No space left on device.*free space"):
        atomic_write_text(target, "{}")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]
