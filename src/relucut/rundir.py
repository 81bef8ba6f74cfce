"""Run directories: atomic writes, and claiming a folder for one run with its settings.

Every resumable command (train, deepreduce, deepreshape, snl, senet) keeps its state in a folder
and must refuse a folder that belongs to another run, or that another process is using right now.

Atomic writes (readers see the old file or the new one, never half of it)::

    atomic_write_text(path: Path, text: str) -> None
    atomic_write_json(path: Path, data: Any, *, indent: int = 1) -> None  # strict: no NaN/Infinity
    atomic_torch_save(obj: Any, path: Path) -> None
    atomic_write(path: Path, write: Callable[[str], Any]) -> None  # write(tmp) fills a temp file

A write that fails (read-only or full disk, no permission) raises a one-line RelucutError naming
the path and the fix (:func:`write_failure`; ``with writing(path):`` for other writes, e.g. appends).
JSON is written strictly (:func:`json_text`): a non-finite number is refused, never written as NaN.
A temp file a killed process left (``.NAME.XXXXXXXX.tmp``) is removed when the folder is next claimed.

Claiming::

    claim(run_dir, settings: dict, *, file="config.json", runtime=()) -> Claim

``claim`` creates ``run_dir`` if needed and, in this order:

1. refuses a path that is a file, or a folder this user cannot write, or one that holds another
   kind of artifact: an export (``recipe.json``), or another command's settings file (e.g.
   ``search.json`` where ``config.json`` is claimed), or settings of another kind of run (a
   ``relucut snl`` folder claimed for ``relucut senet``);
2. takes an exclusive lock (``fcntl.flock`` on ``run_dir/.lock``, which records the pid); a folder
   another live process holds is refused: "'DIR' is in use by another relucut run (pid N); ...";
3. compares ``settings`` with those saved in ``run_dir/file`` (a key the saved file lacks counts as
   the same when it is None here: an option added since, left unset): a file that is not a JSON object is
   "corrupt"; differing keys are named as dotted paths (``train.lr``); keys or dotted paths in
   ``runtime`` (e.g. ``("device",)`` or ``("train.device",)``) are left out of the comparison;
4. writes ``settings`` (as JSON) to ``run_dir/file`` atomically, and removes temp files that a
   killed writer left in ``run_dir``.

Each refusal is a one-line :class:`~relucut.errors.RelucutError` naming the fix. The returned
:class:`Claim` holds the lock until ``release()``, the end of a ``with`` block, or process exit
(the kernel drops a dead process's flock, so a killed run never leaves a stale lock)::

    with claim(out, {"format": "relucut.x", "version": 1, **settings}, runtime=("device",)):
        ...  # train, resume, write results

``settings`` must be JSON-serializable; it is compared after a JSON round trip (tuples == lists).
Under torch.distributed, only the main rank should claim (the others would find the lock taken).
A process may claim a folder inside one it holds (a search's own run dirs); claiming the same
folder twice is refused even within one process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from relucut.errors import RelucutError

LOCK_FILE = ".lock"
EXPORT_FILE = "recipe.json"  # relucut.recipe.RECIPE_FILE: what marks an export folder
SETTINGS_FILES = {"config.json": "run", "search.json": "DeepReDuce search",
                  "deepreshape.json": "DeepReShape run"}
# what atomic_write and relucut.export leave when killed: .NAME.XXXXXXXX.tmp (a file or a folder, + .old)
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.old)?")
_MISSING = object()


# -- write failures and strict JSON ---------------------------------------------------------------
def write_failure(path: str | Path, exc: OSError, verb: str = "write") -> RelucutError:
    """The one-line error for a write to ``path`` that failed with ``exc``: what and how to fix it."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space there, or choose another --out"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make that folder writable, or choose another --out"
    else:
        fix = "check that folder, or choose another --out"
    return RelucutError(f"cannot {verb} '{path}' ({reason}); {fix}")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turns an OSError of the writes inside into :func:`write_failure` for ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_failure(path, exc) from None


def json_text(data: Any, *, indent: int | None = 1, where: str | Path = "a JSON file") -> str:
    """``data`` as strict JSON: a NaN or infinity is refused (JSON has no such numbers), never written."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):
            raise
        raise RelucutError(f"refusing to write a non-finite number (NaN or infinity) into {where}: JSON has "
                           "none; a run that diverged makes them (rerun it with a lower learning rate)") from None


# -- atomic writes ----------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Calls ``write(tmp_path)`` on a temp file beside ``path``, then renames it over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_failure(path, exc) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` so that readers see the old file or the new one, never half of it."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, data: Any, *, indent: int = 1) -> None:
    """Writes ``data`` as strict JSON (:func:`json_text`), atomically."""
    atomic_write_text(path, json_text(data, indent=indent, where=path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # here: the rest of this module needs no torch

    buffer = io.BytesIO()  # serialized in memory: a failing disk then raises OSError, not torch's own error
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def remove_temp_files(folder: Path) -> list[str]:
    """Removes what killed writers left in ``folder`` (``.NAME.XXXXXXXX.tmp`` files and folders);
    call it only while holding the folder. Returns the names removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            if TEMP_NAME.fullmatch(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return removed


# -- claiming ---------------------------------------------------------------------------------------
class Claim:
    """A run directory held by this process: its path, its settings, and the lock."""

    def __init__(self, path: Path, settings: dict[str, Any], lock: Any):
        self.path = path
        self.settings = settings
        self._lock = lock

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(run_dir: str | Path, settings: dict[str, Any], *, file: str = "config.json",
          runtime: Sequence[str] = ()) -> Claim:
    """Takes ``run_dir`` for a run with ``settings`` (see the module docstring)."""
    path = Path(run_dir)
    mine = json.loads(json_text(settings, indent=None, where=path / file))
    _refuse_other_artifacts(path, file)
    _make_writable_dir(path)
    lock = _lock(path)
    try:
        saved = read_settings(path, file)
        if saved is not None:
            if _kind(saved) != _kind(mine):
                raise RelucutError(f"'{path}' holds a {_kind(saved)} run, not a {_kind(mine)} run; "
                                   "choose another --out")
            differs = differences(saved, mine, runtime)
            if differs:
                raise RelucutError(
                    f"'{path}' holds a run with different {', '.join(differs)}; rerun with the same "
                    "settings to resume it, or pass a new --out")
        atomic_write_json(path / file, mine)
        remove_temp_files(path)
    except BaseException:
        lock.close()
        raise
    return Claim(path, mine, lock)


def _kind(settings: dict[str, Any]) -> str:
    """What kind of run saved ``settings``: its format, else its method (snl, senet), else training."""
    kind = settings.get("format") or settings.get("method") or "training"
    return str(kind)


def _refuse_other_artifacts(path: Path, file: str) -> None:
    """A folder holding an export or another command's settings is not this run's to write into."""
    if not path.is_dir():
        return
    if (path / EXPORT_FILE).is_file():
        raise RelucutError(f"'{path}' holds an export ({EXPORT_FILE}), not a run; choose another --out "
                           "(a run is exported with relucut export RUN --out ANOTHER_FOLDER)")
    for other, what in SETTINGS_FILES.items():
        if other != file and (path / other).is_file():
            raise RelucutError(f"'{path}' holds a {what} ({other}); choose another --out")


def read_settings(run_dir: Path, file: str = "config.json") -> dict[str, Any] | None:
    """The settings saved in ``run_dir/file``; None when there are none yet."""
    path = Path(run_dir) / file
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise RelucutError(f"'{path}' is corrupt (not a JSON object); delete it to start that run "
                           "afresh, or choose another --out")
    return saved


def differences(saved: dict[str, Any], mine: dict[str, Any], runtime: Sequence[str] = ()) -> list[str]:
    """Keys whose values differ, as dotted paths into nested dicts, leaving out ``runtime`` ones."""
    return [key for key in _differing_paths(saved, mine, "") if not _is_runtime(key, runtime)]


def _differing_paths(a: dict[str, Any], b: dict[str, Any], prefix: str) -> Iterator[str]:
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(left, dict) and isinstance(right, dict):
            yield from _differing_paths(left, right, f"{prefix}{key}.")
        elif left is _MISSING and right is None:
            continue  # a setting added since that run was written, left unset: the same run
        elif left != right:
            yield f"{prefix}{key}"


def _is_runtime(key: str, runtime: Sequence[str]) -> bool:
    return any(key == r or key.startswith(r + ".") for r in runtime)


def _make_writable_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RelucutError(f"'{path}' is a file, not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RelucutError(f"cannot create '{path}' ({exc.strerror}); choose another --out") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RelucutError(f"'{path}' is not writable; fix its permissions or choose another --out")


def _lock(path: Path) -> Any:
    """The open, exclusively flocked ``path/.lock``, holding this process's pid."""
    with writing(path / LOCK_FILE):
        handle = open(path / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise RelucutError(f"'{path}' is in use by another relucut run (pid {pid}); wait for it or "
                           "choose another --out") from None
    try:
        with writing(path / LOCK_FILE):
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


# -- a method's run folder ----------------------------------------------------------------------
class RunDir:
    """A method's run folder: claimed for one run's settings (a rerun with the same settings resumes
    there, other settings are refused), finished once its result file is written (last, atomically,
    after everything it describes). A run refused for bad input before it wrote anything leaves the
    folder as it found it (no settings file, no lock file, no new empty folder)::

        with RunDir(out, settings, runtime=("teacher.path",)) as run:
            if (done := run.finished()) is not None:
                return done
            ...
            run.finish(result)
    """

    def __init__(self, path: str | Path, settings: dict[str, Any], *, file: str = "config.json",
                 runtime: Sequence[str] = (), result: str = "result.json", done_marker: str | None = "export"):
        self.path, self.settings, self.file, self.runtime = Path(path), settings, file, tuple(runtime)
        self.result_file, self.done_marker = result, done_marker
        self._claim: Claim | None = None
        self._fresh = False

    def __enter__(self) -> RunDir:
        created = not self.path.exists()
        self._fresh = created or not (self.path / self.file).exists()
        self._created = created
        self._claim = claim(self.path, self.settings, file=self.file, runtime=self.runtime)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._claim is not None:
            self._claim.release()
        if isinstance(exc, RelucutError) and self._fresh:
            self._undo()

    def _undo(self) -> None:
        """Removes what claiming added (here and in the folders its stages claimed), when nothing
        else was written since: a run refused for its input leaves no folder that holds it."""
        if not _only_claims(self.path, self.file):
            return
        if self._created:
            shutil.rmtree(self.path)
        else:
            _remove_claims(self.path, self.file)

    def finished(self) -> dict[str, Any] | None:
        """The result of a run that ended here with these settings, else None."""
        try:
            data = json.loads((self.path / self.result_file).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or (self.done_marker and not (self.path / self.done_marker).exists()):
            return None
        return data

    def finish(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / self.result_file, result)


def _only_claims(folder: Path, file: str = "config.json") -> bool:
    """Whether ``folder`` holds nothing but claims: settings files and locks, here and below."""
    for entry in folder.iterdir():
        if entry.is_dir():
            if not _only_claims(entry):
                return False
        elif entry.name not in (file, "config.json", LOCK_FILE):
            return False
    return True


def _remove_claims(folder: Path, file: str) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.name in (file, LOCK_FILE):
            entry.unlink()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: how run settings name a file that may move with its folder."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["Claim", "RunDir", "atomic_torch_save", "atomic_write", "atomic_write_json", "atomic_write_text", "claim",
           "differences", "file_digest", "json_text", "read_settings", "remove_temp_files", "write_failure", "writing"]
