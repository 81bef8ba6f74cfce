"""rho (DeepReDuce's resolution scaling) by average-pooling the input (the models' default) or by a
strided stem conv as the authors' model zoo does (DeepReDuce's rho candidates' default, measured
ahead in bench/results/deepreduce_cifar10_seeds.md): the same ReLU and MAC counts, different networks."""

import pytest
import torch

from relucut import RelucutError, count, find_sites
from relucut.deepreduce.candidates import Candidate
from relucut.models.registry import ModelSpec, create_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("rho, relus", [(0.5, 139_264), (0.25, 34_816)])
def test_stride_and_pool_count_alike(rho, relus):
    pool = create_model("resnet18", rho=rho)
    stride = create_model("resnet18", rho=rho, rho_mode="stride")
    reports = [count(m, (3, 32, 32)) for m in (pool, stride)]
    assert reports[0].relus == reports[1].relus == relus  # DeepReDuce: rho 0.5 is a quarter of 557,056
    assert reports[0].macs == reports[1].macs and reports[0].conv_depth == reports[1].conv_depth
    stem = [next(s for s in find_sites(m, (3, 32, 32)) if s.stage == "stem").shape for m in (pool, stride)]
    assert stem[0] == stem[1] == (64, int(32 * rho), int(32 * rho))
    assert stride.stem.conv.stride == (round(1 / rho),) * 2 and stride.resize.rho == 1.0
    assert pool.stem.conv.stride == (1, 1) and pool.resize.rho == rho


def test_the_networks_differ_with_the_same_weights():
    torch.manual_seed(0)
    pool = create_model("resnet10", base_width=4, rho=0.5).eval()
    stride = create_model("resnet10", base_width=4, rho=0.5, rho_mode="stride").eval()
    stride.load_state_dict(pool.state_dict())  # same parameters, same shapes
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (pool(x) - stride(x)).abs().max() > 1e-3


def test_deepreduce_rho_candidates_stride_by_default_and_pool_on_request():
    base = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8})
    strided = Candidate(1, "rho", ("stem", "s1"), (), rho=0.5)
    assert strided.spec(base).kwargs["rho_mode"] == "stride" and strided.spec(base).build().stem.conv.stride == (2, 2)
    on_half = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8, "rho": 0.5})
    assert strided.spec(on_half).build().stem.conv.stride == (4, 4)  # rho 0.25 in all: stride 4
    odd = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8, "rho": 0.75})
    assert "rho_mode" not in strided.spec(odd).kwargs  # 1/0.375 is no stride: pooled
    assert strided.spec(odd).build().stem.conv.stride == (1, 1)
    pooled = Candidate(1, "rho", ("stem", "s1"), (), rho=0.5, rho_mode="pool")
    assert pooled.name.endswith("_rho0.5_pool-rho") and strided.name.endswith("_rho0.5")
    assert "rho_mode" not in pooled.spec(base).kwargs
    assert count(pooled.spec(base).build(), (3, 32, 32)).relus == count(strided.spec(base).build(), (3, 32, 32)).relus
    assert Candidate(1, "thinned", ("stem", "s1"), ("s2",), rho_mode="pool").name == "cull-s1_thin-s2"


def test_generate_candidates_passes_the_rho_mode_and_refuses_unknown_ones():
    from relucut.deepreduce.candidates import generate_candidates

    stages = ("stem", "s1", "s2", "s3", "s4")
    cands = generate_candidates(["s1", "s2", "s3", "s4"], stages, rho_mode="pool")
    assert {c.rho_mode for c in cands} == {"pool"}
    with pytest.raises(RelucutError, match="unknown rho_mode 'conv'"):
        generate_candidates(["s1", "s2", "s3", "s4"], stages, rho_mode="conv")


def test_deepreduce_rho_candidates_keep_the_base_models_rho_mode():
    base = ModelSpec("resnet18", num_classes=10, kwargs={"base_width": 8, "rho_mode": "stride"})
    spec = Candidate(1, "rho", ("stem", "s1"), (), rho=0.5).spec(base)
    model = spec.build()
    assert model.stem.conv.stride == (2, 2) and count(model, spec.input_size).relus_full == 69_632 // 4  # w8 at 32x32: 69,632


@pytest.mark.parametrize("kw, needle", [({"rho": 0.75, "rho_mode": "stride"}, "1/rho to be an integer"),
                                        ({"rho": 0.5, "rho_mode": "conv"}, "unknown rho_mode 'conv'")])
def test_bad_rho_modes_are_one_line_errors(kw, needle):
    with pytest.raises(RelucutError, match=needle):
        create_model("resnet18", **kw)
