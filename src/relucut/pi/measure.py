"""Real 2PC measurement: run a network under SecretFlow SPU (Cheetah) and read what it cost.

The SPU environment is separate (its numpy<2 and jax pins clash with ours), so this module writes
the network as an op graph to a work directory and runs ``spu_runner.py`` with the SPU
environment's Python. Weights are either public (both parties know them: a lower bound on cost,
the model is exposed) or secret-shared between the parties (an upper bound): Cheetah in SPU
refuses inputs private to one party, so a true server-owned model cannot be expressed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import relucut
from relucut.errors import RelucutError
from relucut.pi.estimate import Workload
from relucut.pi.graph_export import OpGraph, export_graph

MODES = ("public-weights", "shared-weights")
MODE_NOTE = {
    "public-weights": "weights public to both parties: a LOWER bound on cost (the model is exposed)",
    "shared-weights": "weights secret-shared between the parties: an UPPER bound on cost",
}
RUNNER = Path(__file__).with_name("spu_runner.py")
# |secure - plaintext| must stay within ATOL + RTOL * max|plaintext|: FM64 with 18 fractional bits
# and Cheetah's probabilistic truncation leave errors of a few 2^-18 per op, growing with depth
ATOL, RTOL = 1e-2, 1e-2


def spu_python() -> Path:
    """The SPU environment's interpreter: $RELUCUT_SPU_PYTHON, else .venv-spu of the checkout."""
    env = os.environ.get("RELUCUT_SPU_PYTHON")
    if env:
        path = Path(env)
    else:
        root = Path(relucut.__file__).resolve().parents[2]
        path = root / ".venv-spu" / "bin" / "python"
    if not path.exists() or (not env and not (path.parents[1] / ".installed").exists()):
        raise RelucutError(
            f"the SPU environment is missing ({path} not found); create it with `make spu-env` "
            "(or point RELUCUT_SPU_PYTHON at a Python with spu==0.9.5)"
        )
    return path


@dataclass
class RunCost:
    wall_s: float
    bytes: int
    messages: int
    relu_bytes: int  # bytes of the comparison ops (ReLUs)
    linear_bytes: int  # bytes of convolutions / matrix products
    rounds: int = 0  # the larger party's messages: an upper bound on sequential round trips
    cpu_s: float = 0.0  # the busier party's CPU seconds (all threads): others' load moves it less than wall_s


@dataclass
class Measurement:
    mode: str
    relus: int
    relu_layers: int
    macs: int
    first: RunCost  # includes the one-time OT setup
    warm: RunCost  # mean of the warm runs
    warm_runs: int
    max_abs_error: float  # secure output vs PyTorch
    max_abs_output: float
    matches: bool
    engine: str
    meta: dict[str, Any] = field(default_factory=dict)
    # the rest of the workload the cost model prices (relucut.pi.Workload)
    truncations: int = 0
    gathered: int = 0
    linear_layers: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # per-element kinds: elements (matmul: MACs)
    kind_layers: dict[str, int] = field(default_factory=dict)

    @property
    def note(self) -> str:
        return MODE_NOTE[self.mode]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "note": self.note}


RELU_OPS = ("pphlo.less", "pphlo.greater", "pphlo.max", "pphlo.maximum", "pphlo.select", "pphlo.relu")
LINEAR_OPS = ("pphlo.convolution", "pphlo.dot", "pphlo.dot_general")


def _run_cost(run: dict) -> RunCost:
    ops = run.get("ops", {})
    return RunCost(
        wall_s=float(run["wall_s"]), bytes=int(run["bytes"]), messages=int(run["messages"]),
        relu_bytes=sum(v["bytes"] for k, v in ops.items() if k in RELU_OPS),
        linear_bytes=sum(v["bytes"] for k, v in ops.items() if k in LINEAR_OPS),
        rounds=max(run.get("messages_by_party", [0])),
        cpu_s=float(max(run.get("cpu_s_by_party", [0.0]))),
    )


def _mean_cost(runs: list[RunCost]) -> RunCost:
    n = len(runs)
    return RunCost(
        wall_s=sum(r.wall_s for r in runs) / n, bytes=round(sum(r.bytes for r in runs) / n),
        messages=round(sum(r.messages for r in runs) / n),
        relu_bytes=round(sum(r.relu_bytes for r in runs) / n),
        linear_bytes=round(sum(r.linear_bytes for r in runs) / n),
        rounds=round(sum(r.rounds for r in runs) / n),
        cpu_s=sum(r.cpu_s for r in runs) / n,
    )


def write_workdir(graph: OpGraph, x: np.ndarray, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "graph.json").write_text(json.dumps(graph.to_json()))
    np.savez(workdir / "arrays.npz", **graph.arrays)
    np.save(workdir / "input.npy", x.astype(np.float32))


@torch.no_grad()
def measure_many(
    models: list[nn.Module],
    input_size: tuple[int, ...],
    mode: str = "public-weights",
    runs: int = 3,
    batch: int = 1,
    seed: int = 0,
    timeout: float = 600.0,
) -> list[Measurement]:
    """Runs each eval-mode model on one random input batch under SPU Cheetah, all in one process
    pair: the one-time OT setup falls in the first run of the first model only."""
    if mode not in MODES:
        raise RelucutError(f"unknown mode '{mode}'; use one of: {', '.join(MODES)}")
    if runs < 2:
        raise RelucutError(f"--runs must be >= 2 (one run with setup, then warm runs), got {runs}")
    python = spu_python()
    x = torch.randn((batch, *input_size), generator=torch.Generator().manual_seed(seed))
    prepared = []
    for model in models:
        model = model.eval()
        prepared.append((export_graph(model, input_size), relucut.count(model, input_size), model(x).numpy()))
    with tempfile.TemporaryDirectory(prefix="relucut-spu-") as tmp:
        works = [Path(tmp) / f"net{i}" for i in range(len(models))]
        for work, (graph, _, _) in zip(works, prepared):
            write_workdir(graph, x.numpy(), work)
        cmd = [str(python), str(RUNNER), "run", *map(str, works), "--mode", mode, "--runs", str(runs),
               "--timeout", str(timeout)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 120, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise RelucutError(f"the SPU run took longer than {timeout:.0f} s; measure a smaller model "
                               "or raise --timeout") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if "failed (timeout)" in last:  # the runner's own deadline (--timeout), not a broken environment
                raise RelucutError(f"the SPU run took longer than {timeout:g} s; measure a smaller model "
                                   "or raise --timeout")
            raise RelucutError(f"the SPU run failed: {last[:300]}{_environment_hint(last)}")
        results = [json.loads((work / "result.json").read_text()) for work in works]
    return [_measurement(r, graph, report, ref, mode, batch, seed)
            for r, (graph, report, ref) in zip(results, prepared)]


def _environment_hint(last_line: str) -> str:
    """Recreating .venv-spu helps only when the failure is a missing or broken package there."""
    broken = ("ImportError", "ModuleNotFoundError", "undefined symbol", "cannot open shared object")
    return " (re-create the environment with `make spu-env`)" if any(b in last_line for b in broken) else ""


def _measurement(result, graph: OpGraph, report, reference: np.ndarray, mode: str, batch: int, seed: int) -> Measurement:
    secure = np.asarray(result["secure_output"], dtype=np.float64)
    err = float(np.max(np.abs(secure - reference)))
    scale = float(np.max(np.abs(reference)))
    costs = [_run_cost(r) for r in result["runs"]]
    work = Workload.of(report)
    return Measurement(
        mode=mode, relus=report.relus, relu_layers=sum(1 for s in report.sites if s.relus > 0),
        macs=work.macs, first=costs[0], warm=_mean_cost(costs[1:]), warm_runs=len(costs) - 1,
        truncations=work.truncations, gathered=work.gathered, linear_layers=work.linear_layers,
        kinds=dict(work.smooth), kind_layers=dict(work.smooth_layers),
        max_abs_error=err, max_abs_output=scale, matches=err <= ATOL + RTOL * scale,
        engine=f"{result['engine']} {result['protocol']} {result['field']} (2 processes, loopback)",
        meta={"batch": batch, "seed": seed, "graph_relus": graph.relus, "compile_s": result["compile_s"],
              "first_run_includes_setup": result["includes_setup"],
              "plain_max_abs_error": float(np.max(np.abs(np.asarray(result["plain_output"]) - reference))),
              "runs": result["runs"]},
    )


def measure(model: nn.Module, input_size: tuple[int, ...], mode: str = "public-weights", runs: int = 3,
            batch: int = 1, seed: int = 0, timeout: float = 600.0) -> Measurement:
    """Runs ``model`` (eval mode) on one random input batch under SPU Cheetah and returns the costs."""
    return measure_many([model], input_size, mode, runs, batch, seed, timeout)[0]


@torch.no_grad()
def plain_outputs(models: list[nn.Module], input_size: tuple[int, ...], seed: int = 0,
                  timeout: float = 300.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(PyTorch output, converted graph's plaintext JAX output) per model: checks the converter alone."""
    python = spu_python()
    x = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory(prefix="relucut-jax-") as tmp:
        works = [Path(tmp) / f"net{i}" for i in range(len(models))]
        refs = []
        for work, model in zip(works, models):
            model = model.eval()
            write_workdir(export_graph(model, input_size), x.numpy(), work)
            refs.append(model(x).numpy())
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run([str(python), str(RUNNER), "plain", *map(str, works)], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RelucutError(f"the JAX rebuild failed: {last[:300]}{_environment_hint(last)}")
        return [(ref, np.load(work / "plain.npy")) for ref, work in zip(refs, works)]
