import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # makes tests/fixtures importable as 'fixtures'


# The files that take longest (seconds on one core, `make test`'s --durations): the two pytest workers
# take whole files, so these go first and the short files fill in behind them (`make test` runs
# with --no-loadscope-reorder, which keeps this order instead of ordering files by test count)
LONGEST_FIRST = ("test_frontier_cross.py", "test_demo.py", "test_finegrained_resume.py",
                 "test_distributed_finegrained.py", "test_export.py", "test_deepreduce_search.py",
                 "test_frontier_resume.py", "test_methods_registry.py", "test_pi_measure.py")


# Tests measured at 2 s or more (`make slow-list` rewrites the file from the everyday subset's
# --durations): marked slow, so `make test-fast` stays the quick subset as tests are added
SLOW_LIST = TESTS / "slow_tests.txt"


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    measured_slow = set(SLOW_LIST.read_text().splitlines()) if SLOW_LIST.is_file() else set()
    for item in items:
        if item.nodeid in measured_slow:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _trust_per_test():
    """Factories a test names are trusted for that test only, as they would be for one process."""
    from relucut.models import registry

    before = set(registry._TRUSTED)
    yield
    registry._TRUSTED.clear()
    registry._TRUSTED.update(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is fastest and keeps CI's 2 shared cores free."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@dataclass
class CliResult:
    """What a test reads of a ``relucut`` run: the fields of ``subprocess.CompletedProcess``."""

    args: list
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, check=None, env=None, timeout=600, cwd=None, subprocess=False):
    """Runs ``relucut ARGS`` the way a user's shell would: the same ``main()``, exit status, stdout
    and stderr. In this process by default (a subprocess pays ~3 s of torch import each time);
    ``subprocess=True`` for tests about the process itself (signals, environment at start-up)."""
    args = [str(a) for a in args]
    run = _run_subprocess if subprocess else _run_in_process
    proc = run(args, env=env, timeout=timeout, cwd=cwd)
    if check is True and proc.returncode != 0:
        raise AssertionError(f"relucut {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def child_pythonpath() -> str:
    """PYTHONPATH of a relucut subprocess: the fixtures, then whatever path the tests themselves run
    with (a checkout's src/ ahead of an installed relucut)."""
    return os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)


def _run_subprocess(args, env, timeout, cwd):
    import subprocess

    full_env = {**os.environ, "PYTHONPATH": child_pythonpath(), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "relucut", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


def _run_in_process(args, env, timeout, cwd):  # noqa: ARG001 (timeout: the in-process run is not killed)
    from click.testing import CliRunner

    from relucut.cli import app as cli_app

    old_argv, old_cwd, old_threads = sys.argv, os.getcwd(), torch.get_num_threads()
    with CliRunner().isolation(env={"COLUMNS": "200", **(env or {})}) as (out, err, _):
        sys.argv = ["relucut", *args]
        try:
            if cwd is not None:
                os.chdir(cwd)
            cli_app.main()  # the console script's entry point: RelucutError -> one line, exit 2
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                sys.stderr.write(exc.code + "\n")
        except Exception:  # what the interpreter does with an uncaught exception
            sys.stderr.write(traceback.format_exc())
            code = 1
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
            torch.set_num_threads(old_threads)  # a --threads option must not outlive its command
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return CliResult(["relucut", *args], code, stdout, stderr)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
