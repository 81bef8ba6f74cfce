"""The SPU/Cheetah cost terms: truncations, gathers, linear layers and rounds; their calibration; engine names."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import relucut
from relucut import ReLUPlan, find_sites
from relucut.errors import RelucutError
from relucut.pi import Profile, Workload, estimate, get_profile, profile_names
from relucut.pi.calibrate import calibrate, measurement_row, read_measurements

BENCH = Path(__file__).parents[1] / "bench" / "results" / "spu_calibration.json"

# every term priced, so each can be seen moving the estimate
ALL_TERMS = Profile(
    name="all-terms", description="test profile", relu_online_s=20e-6, relu_online_bytes=98.0,
    mac_online_s=50e-9, mac_online_bytes=0.01, layer_online_s=0.01, rounds_per_layer=20.0,
    truncation_online_s=2e-6, truncation_online_bytes=3.0, linear_layer_online_s=0.004,
    rounds_per_linear_layer=1.5, gather_online_s=0.5e-6, ref_threads=2, bandwidth_bps=1e12, rtt_s=0.0,
)
BASE = Workload(relus=10_000, relu_layers=6, macs=2_000_000, truncations=40_000, gathered=8_000, linear_layers=12)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


def test_report_counts_truncations_gathers_and_linear_layers():
    model, size = tiny_net(), (3, 8, 8)
    work = Workload.of(relucut.count(model, size))
    # conv 4x8x8 outputs + avg-pool 4x4x4 + linear 10; one ReLU site of 256 elements, kept whole
    assert (work.truncations, work.linear_layers, work.gathered) == (256 + 64 + 10, 2, 0)
    assert (work.relus, work.relu_layers, work.macs) == (256, 1, 3 * 9 * 256 + 64 * 10)
    site = find_sites(model, size).sites[0]
    mask = torch.zeros(site.shape, dtype=torch.bool)
    mask.view(-1)[::4] = True
    masked = Workload.of(relucut.count(model, size, ReLUPlan().set_mask(site.name, mask)))
    assert (masked.relus, masked.gathered, masked.truncations) == (64, 256, work.truncations)
    dropped = Workload.of(relucut.count(model, size, ReLUPlan().set_mask(site.name, torch.zeros_like(mask))))
    assert (dropped.relus, dropped.relu_layers, dropped.gathered) == (0, 0, 0)  # a dropped site gathers nothing


def test_applied_masks_count_the_same_gathers():
    model, size = tiny_net(), (3, 8, 8)
    site = find_sites(model, size).sites[0]
    mask = torch.rand(site.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    plan = ReLUPlan().set_mask(site.name, mask)
    applied = Workload.of(relucut.count(relucut.apply_plan(model, plan, size), size))
    assert applied == Workload.of(relucut.count(model, size, plan))
    assert applied.relus == int(mask.sum()) and applied.gathered == site.numel


@pytest.mark.parametrize("term, step, seconds, nbytes, rounds", [
    ("truncations", 1000, 1000 * 2e-6, 1000 * 3.0, 0.0),
    ("gathered", 1000, 1000 * 0.5e-6, 0.0, 0.0),
    ("macs", 10**6, 10**6 * 50e-9, 10**6 * 0.01, 0.0),
    ("relus", 100, 100 * 20e-6, 100 * 98.0, 0.0),
    ("relu_layers", 1, 0.01, 0.0, 20.0),
    ("linear_layers", 2, 2 * 0.004, 0.0, 2 * 1.5),
])
def test_each_term_moves_the_estimate_by_its_constant(term, step, seconds, nbytes, rounds):
    rtt = 0.01
    before = estimate(BASE, ALL_TERMS, rtt_s=rtt)
    after = estimate(replace(BASE, **{term: getattr(BASE, term) + step}), ALL_TERMS, rtt_s=rtt)
    assert after.online_compute_s - before.online_compute_s == pytest.approx(seconds, rel=1e-9)
    assert after.online_bytes - before.online_bytes == pytest.approx(nbytes, rel=1e-9, abs=1e-9)
    assert after.online_rounds - before.online_rounds == pytest.approx(rounds, abs=1e-9)
    assert after.online_s - before.online_s == pytest.approx(seconds + rounds * rtt, rel=1e-9)


def test_threads_scale_volume_terms_not_per_layer_terms():
    one = estimate(BASE, ALL_TERMS, threads=2)  # the reference threads
    four = estimate(BASE, ALL_TERMS, threads=4)
    per_layer = BASE.relu_layers * 0.01 + BASE.linear_layers * 0.004
    assert four.online_compute_s - per_layer == pytest.approx((one.online_compute_s - per_layer) / 2)


def test_smooth_kinds_keep_the_new_terms():
    work = replace(BASE, smooth={"gelu": 100}, smooth_layers={"gelu": 1})
    priced, unpriced = work.priced({"gelu": 3.0})
    assert (priced.relus, priced.relu_layers) == (BASE.relus + 300, BASE.relu_layers + 1)
    assert (priced.truncations, priced.gathered, priced.linear_layers) == (40_000, 8_000, 12) and unpriced == []


def _synthetic_rows(profile: Profile, n: int = 10, noise: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        work = Workload(relus=int(rng.integers(500, 50_000)), relu_layers=int(rng.integers(2, 20)),
                        macs=int(rng.integers(10**5, 3 * 10**7)), truncations=int(rng.integers(5_000, 200_000)),
                        gathered=int(rng.choice([0, rng.integers(1_000, 60_000)])),
                        linear_layers=int(rng.integers(8, 30)))
        est = estimate(work, profile)
        jitter = 1 + noise * rng.standard_normal()
        rows.append({**measurement_row(work), "online_s": est.online_s * jitter, "online_bytes": est.online_bytes,
                     "rounds": est.online_rounds})
    return rows


def test_calibration_recovers_every_constant():
    fitted, fit = calibrate(_synthetic_rows(ALL_TERMS), get_profile("spu-cheetah"), "recovered")
    for key in ("relu_online_s", "mac_online_s", "layer_online_s", "truncation_online_s", "gather_online_s",
                "linear_layer_online_s", "relu_online_bytes", "mac_online_bytes", "truncation_online_bytes",
                "rounds_per_layer", "rounds_per_linear_layer"):
        assert getattr(fitted, key) == pytest.approx(getattr(ALL_TERMS, key), rel=1e-6), key
    assert fit["time_r2"] == pytest.approx(1.0) and fit["dropped"] == []
    assert fitted.rtt_s == 0.0  # the measured times already hold the measured link's round trips
    assert fitted.name == "recovered"


def test_calibration_drops_unsupported_terms_and_tolerates_noise():
    no_gathers = replace(ALL_TERMS, gather_online_s=0.0)
    rows = [{**r, "gathered": 0} for r in _synthetic_rows(no_gathers, n=14, noise=0.03)]
    fitted, fit = calibrate(rows, ALL_TERMS)
    assert fitted.gather_online_s == 0.0 and "time/gathered" not in fit["dropped"]  # absent column: left out
    assert fitted.relu_online_bytes == pytest.approx(98.0, rel=1e-6)  # bytes were exact
    for row in rows:  # 3 % noise on time: every row still fitted within about 3 noise widths
        assert estimate(Workload(**{k: int(row[k]) for k in measurement_row(BASE)}), fitted).online_s \
            == pytest.approx(row["online_s"], rel=0.12)


def test_calibrate_reads_measure_json_with_the_new_terms(tmp_path):
    rows = _synthetic_rows(ALL_TERMS, n=5)
    measured = {"measurements": [
        {"relus": r["relus"], "relu_layers": r["relu_layers"], "macs": r["macs"], "truncations": r["truncations"],
         "gathered": r["gathered"], "linear_layers": r["linear_layers"],
         "first": {"wall_s": r["online_s"] + 3, "bytes": r["online_bytes"] + 2e6},
         "warm": {"wall_s": r["online_s"], "bytes": r["online_bytes"], "rounds": r["rounds"]}} for r in rows]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(measured))
    read = read_measurements([path])
    assert [r["truncations"] for r in read] == [r["truncations"] for r in rows]
    assert read[0]["rounds"] == rows[0]["rounds"] and read[0]["setup_bytes"] == pytest.approx(2e6)


def test_engine_names_and_unknown_name():
    assert {"delphi", "cheetah", "spu-cheetah", "sci"} <= set(profile_names())
    assert get_profile("SPU_Cheetah").name == "spu-cheetah"
    with pytest.raises(RelucutError) as err:
        estimate(BASE, "gazelle", bandwidth_bps=1e8, rtt_s=0.01, threads=2)
    message = str(err.value)
    assert "gazelle" in message and all(name in message for name in profile_names()) and "\n" not in message


def test_shipped_spu_cheetah_is_the_bench_fit():
    """The shipped profile carries bench/spu_calibration.py's fitted constants (rounded to 3 digits)."""
    fitted = json.loads(BENCH.read_text())["fitted_profile"]
    shipped = get_profile("spu-cheetah")
    for key in ("relu_online_s", "mac_online_s", "layer_online_s", "truncation_online_s", "gather_online_s",
                "linear_layer_online_s", "relu_online_bytes", "mac_online_bytes", "truncation_online_bytes",
                "rounds_per_layer", "rounds_per_linear_layer"):
        assert getattr(shipped, key) == pytest.approx(fitted[key], rel=5e-3, abs=1e-15), key
    # the terms the measurement supports are priced
    assert shipped.relu_online_bytes > 0 and shipped.truncation_online_bytes > 0 and shipped.rounds_per_layer > 0
