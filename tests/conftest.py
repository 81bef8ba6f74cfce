import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # makes tests/fixtures importable as 'fixtures'


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is fastest and keeps CI's 2 shared cores free."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run_cli(*args, check=None, env=None, timeout=600, cwd=None):
    """Runs ``python -m relucut ARGS`` in a subprocess, the way a user's shell would."""
    import subprocess

    full_env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "relucut", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd,
    )
    if check is True and proc.returncode != 0:
        raise AssertionError(f"relucut {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
