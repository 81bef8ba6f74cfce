"""HybReNets: the DeepReShape slides' counts, name resolution, and ResNet18 as hrn_2x2x2x."""

import pytest

from conftest import assert_one_line_error, run_cli
from relucut import RelucutError, count, create_model
from relucut.models.hybrenet import hrn_name, parse_hrn_name, stage_multipliers
from relucut.models.registry import list_models

CIFAR = (3, 32, 32)


# (name, m, ReLUs with the stem, the slides' FLOPs in millions)
SLIDES_TABLE = [
    ("hrn_2x2x2x", 32, 278_528, 141),
    ("hrn_4x4x4x", 16, 278_528, 661),
    ("hrn_3x7x2x", 16, 260_096, 466),
]


@pytest.mark.parametrize("name,m,relus,mmacs", SLIDES_TABLE)
def test_slides_table_relus_and_macs(name, m, relus, mmacs):
    report = count(create_model(name, base_width=m), CIFAR)
    assert report.relus == relus
    assert abs(report.macs / (mmacs * 1e6) - 1) < 0.015


def test_widths_follow_the_ratios():
    net = create_model("hrn_5x5x3x", base_width=8)
    widths = [getattr(net, f"s{i}")[0].conv1.out_channels for i in range(1, 5)]
    assert widths == [8, 40, 200, 600]
    assert net.stem.conv.out_channels == 8
    assert stage_multipliers((5, 5, 3)) == (1, 5, 25, 75)


def test_hrn_2x2x2x_at_m64_is_resnet18():
    hrn, r18 = create_model("hrn_2x2x2x", base_width=64), create_model("resnet18")
    a, b = count(hrn, (3, 16, 16)), count(r18, (3, 16, 16))
    assert (a.relus, a.macs, a.params) == (b.relus, b.macs, b.params)
    assert [s.site.name for s in a.sites] == [s.site.name for s in b.sites]


def test_any_hrn_name_resolves_and_listed_ones_are_in_the_zoo():
    assert {"hrn_2x2x2x", "hrn_7x5x2x", "hrn_5x5x3x", "hrn_6x6x2x", "hrn_5x7x2x"} <= set(list_models())
    assert "hrn_3x3x3x" not in list_models()
    net = create_model("hrn_3x3x3x", base_width=4, blocks=[1, 2, 1, 1])
    assert [len(getattr(net, f"s{i}")) for i in range(1, 5)] == [1, 2, 1, 1]
    assert net.s4[0].conv1.out_channels == 4 * 27
    three_stage = create_model("hrn_2x3x", base_width=4)
    assert three_stage.stage_names == ("stem", "s1", "s2", "s3")
    assert count(three_stage, CIFAR).relus_by_stage["s3"] == 2 * 2 * 24 * 8 * 8


def test_name_round_trip_and_bad_names():
    assert parse_hrn_name(hrn_name((7, 5, 2))) == (7, 5, 2)
    with pytest.raises(RelucutError, match="ratios must be >= 1"):
        create_model("hrn_0x2x2x")
    with pytest.raises(RelucutError, match="unknown model"):
        create_model("hrn_5x5x3")
    with pytest.raises(RelucutError, match="drop --widths"):
        create_model("hrn_2x2x2x", widths=[1, 2, 3, 4])


def test_cli_counts_an_unlisted_hrn():
    proc = run_cli("count", "hrn_6x5x2x", "--base-width", "4", "--blocks", "1,1,1,1", "--json", check=True)
    import json

    report = json.loads(proc.stdout)
    # stem 4·1024 + s1 2·4·1024 + s2 2·24·256 + s3 2·120·64 + s4 2·240·16
    assert report["relus"] == 4096 + 8192 + 12288 + 15360 + 7680
    assert_one_line_error(run_cli("count", "hrn_5x5x3x", "--widths", "1,2,3,4"), "drop --widths")


def test_register_family_resolves_patterns_after_fixed_names(monkeypatch):
    from torch import nn

    from relucut.models import registry
    from relucut.models.registry import create_model as build, register_family, resolve_factory

    monkeypatch.setattr(registry, "_FAMILIES", list(registry._FAMILIES))  # leave the real list untouched

    def builder(match):
        def factory(num_classes=10, in_chans=3):
            return nn.Linear(int(match.group(1)), num_classes)

        return factory

    register_family(r"testfamily_(\d+)", builder)
    assert build("testfamily_7", num_classes=3).weight.shape == (3, 7)
    with pytest.raises(RelucutError, match="unknown model"):
        build("testfamily_x")
    register_family(r"hrn_2x2x2x", builder)  # a listed name is never shadowed by a pattern
    assert resolve_factory("hrn_2x2x2x").__name__ == "hrn_2x2x2x"
