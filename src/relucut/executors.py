"""Where training jobs run: one after another in this process, or spread over a Ray cluster.

A job is one training run of the engine (``relucut.train.train``) in its own run directory, so a
finished job is skipped and an interrupted one resumes from its last.pt wherever it runs again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from relucut.errors import RelucutError
from relucut.train import TrainConfig, read_final

DoneCallback = Callable[["TrainJob", dict, bool], None]  # (job, final metrics, was already finished)


@dataclass
class TrainJob:
    """One training run: ``key`` names it in progress output, ``run_dir`` holds its files."""

    key: str
    config: TrainConfig
    run_dir: Path


def finished_result(job: TrainJob) -> dict | None:
    """final.json of a run that finished with this job's settings, else None (to train or resume)."""
    final, saved = job.run_dir / "final.json", job.run_dir / "config.json"
    if not (final.is_file() and saved.is_file()):
        return None
    differs = job.config.resolved().differences(TrainConfig.load(saved))
    if differs:
        raise RelucutError(
            f"'{job.run_dir}' holds a finished run with different {', '.join(differs)}; "
            "rerun with the same settings, or pass a new --out"
        )
    return read_final(final)  # None when cut short: train again (resumes from last.pt)


class Executor(Protocol):
    def run(self, jobs: Sequence[TrainJob], on_done: DoneCallback) -> dict[str, dict]: ...


class SequentialExecutor:
    """Runs jobs one after another in this process, loading each dataset once."""

    def __init__(self, progress: bool = True, data: Any = None):
        self.progress = progress
        self._data: dict[tuple, Any] = {}
        self._given = data  # DataSplits the caller already holds: every job of its dataset trains on them

    def _dataset(self, cfg: TrainConfig):
        from relucut.train import load_data

        if self._given is not None and self._given.name == cfg.dataset.lower():
            return self._given

        # everything that shapes the split or the pixels: the training engine checks the same fields
        key = (cfg.dataset.lower(), cfg.data_dir, cfg.val_fraction, cfg.seed, cfg.val_from, cfg.spec().image_size)
        if key not in self._data:
            self._data[key] = load_data(cfg)
        return self._data[key]

    def run(self, jobs: Sequence[TrainJob], on_done: DoneCallback) -> dict[str, dict]:
        from relucut.train import train

        out = {}
        for job in jobs:
            final = finished_result(job)
            skipped = final is not None
            if final is None:
                final = train(job.config, job.run_dir, progress=self.progress, data=self._dataset(job.config))
            out[job.key] = final
            on_done(job, final, skipped)
        return out


def _train_remote(config: dict, run_dir: str, threads: int, trusted: tuple[str, ...] = ()) -> dict:
    """Runs on a Ray worker: one job, with as many torch threads as CPUs it was given, trusting
    the model factories the driver trusts (the config came from the driver, not from a file)."""
    import torch

    from relucut.models.registry import trust_factory
    from relucut.train import TrainConfig as Config
    from relucut.train import train

    torch.set_num_threads(max(1, threads))
    trust_factory(*trusted)
    return train(Config.from_dict(config), run_dir, progress=False)


class RayExecutor:
    """Spreads jobs over a Ray cluster: one GPU per job when the cluster has GPUs.

    Run directories (and the teacher) must be on storage every node sees: a shared file system on
    a real cluster. ``address=None`` starts a local Ray instance.
    """

    def __init__(self, address: str | None = None, cpus_per_job: int = 1, gpus_per_job: float | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RelucutError("--executor ray needs Ray; pip install 'relucut[ray]'") from None
        self.address, self.cpus_per_job, self.gpus_per_job = address, max(1, int(cpus_per_job)), gpus_per_job

    def _init(self):
        import ray

        if not ray.is_initialized():
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise RelucutError(f"cannot start or reach Ray at {where} ({exc}); check --address") from None
        return ray

    def run(self, jobs: Sequence[TrainJob], on_done: DoneCallback) -> dict[str, dict]:
        out: dict[str, dict] = {}
        pending = []
        for job in jobs:
            final = finished_result(job)
            if final is None:
                pending.append(job)
            else:
                out[job.key] = final
                on_done(job, final, True)
        if not pending:
            return out
        ray = self._init()
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=gpus, max_retries=0)(_train_remote)
        from relucut.models.registry import trusted_factories

        trusted = tuple(sorted(trusted_factories()))
        refs = {remote.remote(job.config.to_dict(), str(job.run_dir), self.cpus_per_job, trusted): job
                for job in pending}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(done[0])
            try:
                final = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                if isinstance(cause, RelucutError):
                    raise RelucutError(f"{job.key}: {cause}") from None
                raise
            out[job.key] = final
            on_done(job, final, False)
        return out


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fails fast on a 'host:port' (or ray://host:port) nobody listens on: Ray itself retries forever."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RelucutError(f"--address '{address}' is not host:port (or ray://host:port, auto); fix it")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RelucutError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); "
                           "start one (ray start --head) or fix --address") from None


def make_executor(name: str, address: str | None = None, progress: bool = True, cpus_per_job: int = 1,
                  data: Any = None, gpus_per_job: float | None = None) -> Executor:
    """``data``: DataSplits the sequential executor trains on instead of loading them by config;
    ``gpus_per_job``: Ray's GPU share per job (0.25: four small networks per GPU; None: one GPU
    each where the cluster has GPUs)."""
    if name == "sequential":
        if address:
            raise RelucutError("--address is for --executor ray; drop it or add --executor ray")
        return SequentialExecutor(progress=progress, data=data)
    if name == "ray":  # workers load the dataset by its config
        if gpus_per_job is not None and not 0 < gpus_per_job <= 1:
            raise RelucutError(f"--gpus-per-job must be in (0, 1], got {gpus_per_job}")
        return RayExecutor(address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job)
    raise RelucutError(f"unknown executor '{name}'; use sequential or ray")
