"""The Ray executor on a local Ray instance: jobs run in workers, finished ones are skipped."""

import json

import pytest
import ray  # in the test extra, so CI exercises this path

from relucut import ModelSpec
from relucut.executors import RayExecutor, SequentialExecutor, TrainJob
from relucut.train import TrainConfig

pytestmark = pytest.mark.ray


def tiny(seed):
    spec = ModelSpec("resnet20", num_classes=10, in_chans=1, image_size=8, kwargs={"blocks": [1, 1, 1], "base_width": 4})
    return TrainConfig(model=spec.to_dict(), dataset="digits", epochs=1, batch_size=64, lr=0.05, limit_train=128,
                       seed=seed, device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_runs_jobs_and_sequential_skips_them(local_ray, tmp_path):
    jobs = [TrainJob(f"job{s}", tiny(s), tmp_path / f"run{s}") for s in (0, 1)]
    seen = []
    out = RayExecutor(cpus_per_job=1).run(jobs, lambda job, final, skipped: seen.append((job.key, skipped)))
    assert sorted(seen) == [("job0", False), ("job1", False)]
    for job in jobs:
        final = json.loads((job.run_dir / "final.json").read_text())
        assert out[job.key]["best_val_acc"] == final["best_val_acc"] and final["epochs"] == 1
    # a finished run is not trained again, by either executor
    again = []
    SequentialExecutor(progress=False).run(jobs, lambda job, final, skipped: again.append(skipped))
    RayExecutor().run(jobs, lambda job, final, skipped: again.append(skipped))
    assert again == [True, True, True, True]
    # a Ray worker computes what this process computes
    here = SequentialExecutor(progress=False).run([TrainJob("here", tiny(1), tmp_path / "here")], lambda *a: None)
    assert here["here"]["best_val_acc"] == out["job1"]["best_val_acc"]
    assert here["here"]["test_acc"] == out["job1"]["test_acc"]


def test_an_unreachable_address_fails_fast_with_a_fix():
    from relucut import RelucutError
    from relucut.executors import _check_reachable, make_executor

    with pytest.raises(RelucutError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(RelucutError, match="not host:port"):
        _check_reachable("nowhere")
    with pytest.raises(RelucutError, match="--address is for --executor ray"):
        make_executor("sequential", address="127.0.0.1:6379")
