"""Exact ReLU/MAC numbers from the papers' tables."""

import pytest

from relucut import ReLUPlan, count, create_model, find_sites


def relus(name, size=(3, 32, 32), plan=None, **kw):
    return count(create_model(name, **kw), size, plan=plan)


def test_resnet18_cifar100_stages():
    r = relus("resnet18", num_classes=100)
    assert r.relus == 557_056
    assert r.relus_by_stage == {"stem": 65_536, "s1": 262_144, "s2": 131_072, "s3": 65_536, "s4": 32_768}
    assert abs(r.macs - 0.556e9) / 0.556e9 < 0.01
    assert r.conv_depth == 17  # DeepReDuce '#Conv'


def test_resnet18_tinyimagenet():
    assert relus("resnet18", (3, 64, 64), num_classes=200).relus == 2_228_224


def test_resnet34_stages():
    by = relus("resnet34").relus_by_stage
    assert (by["s1"], by["s2"], by["s3"], by["s4"]) == (393_216, 262_144, 196_608, 49_152)


def test_wrn22_8():
    assert relus("wrn22_8").relus == 1_392_640


@pytest.mark.parametrize(
    "name, kw, expected, depth",
    [
        ("resnet10", {}, 311_296, 9),  # Table 9: 311K, 9 convs
        ("resnet10", {"alpha": 0.5}, 155_648, 9),  # Table 7: 155.6K
        ("resnet9", {"alpha": 0.5, "rho": 0.5}, 30_720, 8),  # Table 7 / §1: 30,720, 8 convs
        ("resnet6", {}, 188_416, 5),  # Table 9: 188K, 5 convs
        ("resnet6", {"rho": 0.5}, 47_104, 5),  # Table 9: 47K
        ("resnet18", {"alpha": 0.25}, 139_264, 17),  # Table 9: 139K
    ],
)
def test_shallow_baselines(name, kw, expected, depth):
    r = relus(name, **kw)
    assert r.relus == expected and r.conv_depth == depth


def test_resnet56_stages_table10():
    by = relus("resnet56", num_classes=100).relus_by_stage
    assert by["stem"] + by["s1"] == 311_296  # Table 10 counts the stem in S1
    assert (by["s2"], by["s3"]) == (147_456, 73_728)


@pytest.mark.parametrize(
    "cull, thin, kw, expected",
    [  # DeepReDuce Table 4 (ResNet18, CIFAR-100); the stem ReLU is always culled
        (["stem", "s1"], [], {}, 229_376),
        (["stem", "s1", "s4"], [], {}, 196_608),
        (["stem", "s1"], ["s2", "s3", "s4"], {}, 114_688),
        (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5}, 57_344),
        (["stem", "s1", "s4"], ["s2", "s3"], {"alpha": 0.5}, 49_152),
        (["stem", "s1"], ["s2", "s3", "s4"], {"rho": 0.5}, 28_672),
        (["stem", "s1", "s4"], ["s2", "s3"], {"rho": 0.5}, 24_576),
        (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5, "rho": 0.5}, 14_336),
        (["stem", "s1", "s4"], ["s2", "s3"], {"alpha": 0.5, "rho": 0.5}, 12_288),
        (["stem", "s1"], ["s2", "s3", "s4"], {"alpha": 0.5, "rho": 0.5, "blocks": [1, 1, 1, 1]}, 7_168),
    ],
)
def test_deepreduce_table4_relu_counts(cull, thin, kw, expected):
    model = create_model("resnet18", num_classes=100, **kw)
    sites = find_sites(model, (3, 32, 32))
    plan = ReLUPlan.deepreduce(sites, cull=cull, thin=thin)
    assert plan.count(sites) == expected
    assert count(model, (3, 32, 32), plan=plan).relus == expected


def test_tinyimagenet_table5_first_rows():
    model = create_model("resnet18", num_classes=200)
    sites = find_sites(model, (3, 64, 64))
    assert ReLUPlan.deepreduce(sites, cull=["stem", "s1"]).count(sites) == 917_504
    assert ReLUPlan.deepreduce(sites, cull=["stem", "s1", "s2"]).count(sites) == 393_216


def test_inner_thinning_drops_the_relu_between_the_convs():
    sites = find_sites(create_model("resnet18"), (3, 32, 32))
    plan = ReLUPlan.deepreduce(sites, thin=["s2"], thin_style="inner")  # default: tests/test_thinning.py
    assert sorted(plan.decisions) == ["s2_0_relu1", "s2_1_relu1"]


def test_tinyimagenet_stage_counts_table3():
    r18 = relus("resnet18", (3, 64, 64), num_classes=200).relus_by_stage
    assert [r18[s] for s in ("s1", "s2", "s3", "s4")] == [1_048_576, 524_288, 262_144, 131_072]
    r34 = relus("resnet34", (3, 64, 64), num_classes=200)
    assert r34.relus == 3_866_624  # Table 3 'FR' 3867K
    assert [r34.relus_by_stage[s] for s in ("s1", "s2", "s3", "s4")] == [1_572_864, 1_048_576, 786_432, 196_608]


def test_mobilenet_v1_first_stage_table11():
    by = relus("mobilenet_v1", num_classes=100).relus_by_stage
    assert by["stem"] + by["s1"] == 131_072  # Table 11 S1 (stem included)


def test_resnet56_deepreduce_table8_relus():
    model = create_model("resnet56")
    sites = find_sites(model, (3, 32, 32))
    assert ReLUPlan.deepreduce(sites, cull=["stem", "s1"]).count(sites) == 221_184  # Table 8: 221.2K
