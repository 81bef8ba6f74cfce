"""The private-inference cost model: DELPHI against DeepReDuce Table 4 and the artifact totals."""

import json

import pytest

import relucut
from relucut import ReLUPlan, count, create_model, find_sites
from relucut.errors import RelucutError
from relucut.pi import Workload, estimate, get_profile, load_profile, simulate_requests
from relucut.pi.calibrate import calibrate, read_measurements

# DeepReDuce Table 4 (ResNet18, CIFAR-100, DELPHI): cull, thin, reshaping, ReLUs, latency (s)
TABLE4 = [
    (["stem", "s1"], [], {}, 229_376, 4.61),
    (["stem", "s1", "s4"], [], {}, 196_608, 3.94),
    (["stem", "s1"], ["s2", "s3", "s4"], {}, 114_688, 2.38),
    (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5}, 57_344, 1.37),
    (["stem", "s1", "s4"], ["s2", "s3"], {"alpha": 0.5}, 49_152, 1.19),
    (["stem", "s1"], ["s2", "s3", "s4"], {"rho": 0.5}, 28_672, 0.74),
    (["stem", "s1", "s4"], ["s2", "s3"], {"rho": 0.5}, 24_576, 0.56),
    (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5, "rho": 0.5}, 14_336, 0.52),
    (["stem", "s1", "s4"], ["s2", "s3"], {"alpha": 0.5, "rho": 0.5}, 12_288, 0.45),
    (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5, "rho": 0.5, "blocks": [1, 1, 1, 1]}, 7_168, 0.21),
]


_REPORTS = {}


def _report(cull, thin, kw):
    key = repr((cull, thin, kw))
    if key not in _REPORTS:
        _REPORTS[key] = _build_report(cull, thin, kw)
    return _REPORTS[key]


def _build_report(cull, thin, kw):
    model = create_model("resnet18", num_classes=100, **kw)
    relucut.apply_plan_(model, ReLUPlan.deepreduce(find_sites(model, (3, 32, 32)), cull=cull, thin=thin))
    return count(model, (3, 32, 32))


@pytest.mark.parametrize("cull, thin, kw, relus, latency", TABLE4)
def test_delphi_default_within_25_percent_of_table4(cull, thin, kw, relus, latency):
    report = _report(cull, thin, kw)
    assert report.relus == relus
    est = estimate(report)  # the default profile is delphi
    assert est.protocol == "delphi"
    assert abs(est.online_s / latency - 1) <= 0.25, (est.online_s, latency)


def test_artifact_constants_reproduce_resnet18_cifar_totals():
    report = count(create_model("resnet18", num_classes=10), (3, 32, 32))
    assert report.relus == 557_056
    est = estimate(report, "delphi")
    assert round(est.online_bytes / 1e9, 2) == 0.66  # 557,056 x 1,184 B = 0.6596 GB
    assert round(est.offline_bytes / 1e9, 2) == 11.03
    # garbled circuits alone are 557,056 x 19,088 B = 10.63 GB; the rest is HE traffic of linear layers
    assert round(557_056 * get_profile("delphi").relu_offline_bytes / 1e9, 2) == 10.63


def test_slides_profile_is_slower_per_relu_and_single_threaded():
    work = Workload(relus=100_000, relu_layers=10, macs=0)
    slides, artifact = estimate(work, "delphi-slides"), estimate(work, "delphi")
    assert get_profile("delphi-slides").ref_threads == 1
    assert slides.online_s == pytest.approx(100_000 * 85.3e-6 + 10 * 2 * 0.3e-3)
    assert slides.offline_bytes == pytest.approx(100_000 * 17_500)
    assert slides.online_s > artifact.online_s


def test_cheetah_and_sci_bytes_and_no_relu_offline():
    work = Workload(relus=10_000, relu_layers=4, macs=1_000_000)
    cheetah, sci = estimate(work, "cheetah"), estimate(work, "sci")
    per_mac = {name: get_profile(name).mac_online_bytes for name in ("cheetah", "sci")}
    assert 52 * 10_000 <= cheetah.online_bytes - per_mac["cheetah"] * 1e6 <= 59 * 10_000
    assert 540 * 10_000 <= sci.online_bytes - per_mac["sci"] * 1e6 <= 600 * 10_000
    assert cheetah.offline_s == sci.offline_s == 0.0
    assert cheetah.setup_bytes == pytest.approx(3.5e6)


# torchvision ResNet50 at 224x224 as relucut counts it (bench/results/zoo_costs.json): comparisons (ReLUs and
# max-pool), comparing layers, MACs; the Cheetah paper's WAN (its authors' throttle script): 400 Mbit/s, 40 ms
RESNET50 = Workload(relus=11_214_336, relu_layers=50, macs=4_089_184_256)
WAN = {"bandwidth_bps": 400e6, "rtt_s": 0.040, "threads": 4}


def test_cheetah_and_sci_reproduce_the_cheetah_papers_resnet50_row():
    """Cheetah paper (USENIX Security'22) abstract: ResNet50 under WAN in under 2.5 minutes and 2.3 GB,
    5.6x faster and 12.9x less communication than CrypTFlow2 (SCI)."""
    cheetah, sci = estimate(RESNET50, "cheetah", **WAN), estimate(RESNET50, "sci", **WAN)
    assert 140 <= cheetah.online_s <= 150 and cheetah.online_bytes == pytest.approx(2.3e9, rel=0.01)
    assert sci.online_s / cheetah.online_s == pytest.approx(5.6, rel=0.03)
    assert sci.online_bytes / cheetah.online_bytes == pytest.approx(12.9, rel=0.01)


def test_cheetah_prices_resnets_below_sci_at_any_link():
    resnet18 = Workload(relus=3_913_728, relu_layers=18, macs=1_814_073_344)  # torchvision, 224x224
    for work in (resnet18, RESNET50):
        for link in ({}, WAN, {"bandwidth_bps": 100e6, "rtt_s": 0.08}):
            assert estimate(work, "cheetah", **link).online_s < estimate(work, "sci", **link).online_s / 3


def test_link_threads_and_rounds_move_the_estimate():
    work = Workload(relus=50_000, relu_layers=8, macs=10_000_000)
    base = estimate(work, "sci")
    assert estimate(work, "sci", rtt_s=0.05).online_s == pytest.approx(base.online_s + 8 * 8 * (0.05 - 0.3e-3))
    slow_link = estimate(work, "sci", bandwidth_bps=10e6)  # 28.5 MB over 10 Mbit/s: transfer-bound
    assert slow_link.online_s == pytest.approx(slow_link.online_bytes * 8 / 10e6 + base.online_rounds_s)
    assert estimate(work, "sci", threads=8).online_compute_s == pytest.approx(base.online_compute_s / 2)
    assert estimate(Workload(50_000, 4, 10_000_000), "sci").online_s < base.online_s


def test_offline_lands_on_critical_path_when_requests_arrive_fast():
    # DELPHI resnet18: offline (HE, prop. to MACs) dominates; slow requests hide it, fast ones don't
    report = _report(["stem", "s1"], ["s2", "s3", "s4"], {})
    est = estimate(report, "delphi")
    slow = estimate(report, "delphi", requests_per_s=0.5 / est.total_s).requests
    fast = estimate(report, "delphi", requests_per_s=2.0 / est.total_s).requests
    assert slow.offline_on_critical_path <= 0.01 and slow.mean_latency_s < 1.5 * est.online_s
    assert fast.offline_on_critical_path == 1.0 and fast.mean_latency_s > est.offline_s
    assert fast.throughput_per_s == pytest.approx(1 / est.total_s, rel=0.05)
    # fewer MACs at the same ReLUs: a higher sustainable rate
    cheaper = estimate(Workload(est.relus, est.relu_layers, est.macs // 4), "delphi")
    assert simulate_requests(cheaper.online_s, cheaper.offline_s, 2.0 / est.total_s).offline_on_critical_path < 1.0


def test_profile_file_overrides_constants(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('base = "delphi"\nrelu_online_s = 1e-5\nlayer_online_s = 0\nmac_online_s = 0\n')
    prof = load_profile(path)
    assert prof.relu_online_s == 1e-5 and prof.relu_online_bytes == 1184
    est = estimate(Workload(1000, 2, 0), profile_file=str(path))
    assert est.online_s == pytest.approx(max(1000 * 1e-5, 1000 * 1184 * 8 / 1e9) + 2 * 2 * 0.3e-3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"relu_online_sec": 1}))
    with pytest.raises(RelucutError, match="unknown profile field"):
        load_profile(bad)
    with pytest.raises(RelucutError, match="unknown protocol"):
        estimate(Workload(1, 1, 1), "gazelle")


def test_calibrate_recovers_constants(tmp_path):
    rows = [{"relus": r, "relu_layers": layers, "macs": m,
             "online_s": r * 30e-6 + m * 2e-9 + layers * 0.01, "online_bytes": r * 100 + m * 0.01}
            for r, layers, m in [(1000, 2, 1e6), (5000, 4, 3e6), (20000, 8, 2e6), (40000, 6, 9e6), (2000, 9, 5e6)]]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows))
    prof, fit = calibrate(read_measurements([path]), get_profile("cheetah"))
    assert prof.relu_online_s == pytest.approx(30e-6, rel=1e-6)
    assert prof.layer_online_s == pytest.approx(0.01, rel=1e-6)
    assert prof.relu_online_bytes == pytest.approx(100, rel=1e-6)
    assert fit["time_r2"] == pytest.approx(1.0)
    with pytest.raises(RelucutError, match="at least 3"):
        calibrate(rows[:2], get_profile("cheetah"))
