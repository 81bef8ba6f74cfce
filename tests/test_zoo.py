"""Every registered model builds, runs, and its fx site count equals a hook-based count."""

import pytest
import torch
from torch import nn

import relucut
from relucut import count, create_model, list_models
from relucut.presets import PRESETS


def hook_count(model: nn.Module, x: torch.Tensor) -> int:
    """Independent check: sum of output sizes of every ReLU module call, per sample."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        total += out[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dataset", ["cifar10", "digits"])
def test_registered_model_counts_match_hooks(name, dataset):
    preset = PRESETS[dataset]
    model = create_model(name, num_classes=preset.num_classes, in_chans=preset.in_chans)
    x = torch.randn(2, *preset.input_size)
    out = model.eval()(x)
    assert out.shape == (2, preset.num_classes)
    report = count(model, preset.input_size)
    assert report.relus == hook_count(model, x[:1]) > 0
    assert sum(report.relus_by_stage.values()) == report.relus
    assert sum(report.relus_by_block.values()) == report.relus
    assert report.macs > 0 and report.params == sum(p.numel() for p in model.parameters())


def test_registry_lists_the_issue_zoo():
    expected = {"resnet18", "resnet34", "resnet10", "resnet9", "resnet6", "resnet20", "resnet32",
                "resnet56", "resnet110", "wrn22_8", "mobilenet_v1", "mobilenet_v2", "vgg16"}
    assert expected <= set(list_models())


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "wrn22_8"])
def test_resnet_family_options(name):
    base = count(create_model(name), (3, 32, 32))
    half = count(create_model(name, alpha=0.5), (3, 32, 32))
    assert half.relus * 2 == base.relus
    small = count(create_model(name, rho=0.5), (3, 32, 32))
    assert small.relus * 4 == base.relus
    n_stages = len([s for s in base.stage_names if s != "stem"])
    fewer = count(create_model(name, blocks=[1] * n_stages), (3, 32, 32))
    assert fewer.relus < base.relus


def test_widths_and_base_width():
    explicit = count(create_model("resnet18", widths=[16, 32, 64, 128]), (3, 32, 32))
    via_m = count(create_model("resnet18", base_width=16), (3, 32, 32))
    assert explicit.relus == via_m.relus == 557_056 // 4


def test_rho_that_is_not_a_unit_fraction_still_scales():
    report = count(create_model("resnet10", rho=0.75), (3, 32, 32))
    assert report.relus_by_stage["stem"] == 64 * 24 * 24


def test_bad_options_raise_user_errors():
    for kwargs in ({"alpha": 0}, {"rho": 3}, {"rho": 0}, {"blocks": [1, 1]}, {"widths": [8, 8, 8, 0]}):
        with pytest.raises(relucut.RelucutError):
            create_model("resnet18", **kwargs)
    with pytest.raises(relucut.RelucutError, match="unknown model"):
        create_model("resnet19")
