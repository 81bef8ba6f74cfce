"""ReLU call sites on models outside the zoo: functional calls, reused modules, stage grouping."""

import torch

from relucut import ReLUPlan, ReLUSite, apply_plan, apply_plan_, count, create_model, find_sites, sitify, trace
from fixtures.tv_resnet import FunctionalNet, TorchvisionResNet18


def test_torchvision_style_resnet18_has_17_sites_over_9_modules():
    model = TorchvisionResNet18()
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) == 9
    sites = find_sites(model, (3, 32, 32))
    assert len(sites) == 17
    names = [s.name for s in sites]
    assert names[:3] == ["relu", "layer1_0_relu", "layer1_0_relu_1"]
    # grouped by resolution: stem 16x16 and the max-pooled layer1 at 8x8 are distinct stages
    assert sites.stage_names == ("s1", "s2", "s3", "s4", "s5")
    assert [len(sites.in_stage(s)) for s in sites.stage_names] == [1, 4, 4, 4, 4]
    assert sites["layer1_0_relu_1"].block == "layer1.0"


def test_functional_relus_are_sites():
    sites = find_sites(FunctionalNet(), (3, 8, 8))
    assert [s.op for s in sites] == ["call_function", "call_function", "call_method"]
    assert [s.shape for s in sites] == [(4, 8, 8), (4, 8, 8), (8, 4, 4)]
    assert count(FunctionalNet(), (3, 8, 8)).relus == 4 * 64 * 2 + 8 * 16


def test_sitify_keeps_names_and_outputs():
    model = TorchvisionResNet18(width=8).eval()
    gm = sitify(model).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(gm(x), model(x))
    assert [s.name for s in find_sites(gm, (3, 32, 32))] == [s.name for s in find_sites(model, (3, 32, 32))]
    assert sum(isinstance(m, ReLUSite) for m in gm.modules()) == 17


def test_reused_module_dropped_at_one_call_kept_at_the_other():
    model = TorchvisionResNet18(width=8).eval()
    full = count(model, (3, 32, 32))
    plan = ReLUPlan().drop("layer1_0_relu")
    reduced = apply_plan(model, plan).eval()
    after = count(reduced, (3, 32, 32))
    site = find_sites(model, (3, 32, 32))["layer1_0_relu"]
    assert after.relus == full.relus - site.numel
    kept = {s.site.name: s.relus for s in after.sites}
    assert kept["layer1_0_relu"] == 0 and kept["layer1_0_relu_1"] == site.numel


def test_apply_plan_in_place_on_zoo_model():
    model = create_model("resnet18", alpha=0.25)
    sites = find_sites(model, (3, 32, 32))
    plan = ReLUPlan.deepreduce(sites, cull=["stem", "s1"])
    same = apply_plan_(model, plan, (3, 32, 32))
    assert same is model
    assert isinstance(model.s1[0].relu1, ReLUSite) and model.s1[0].relu1.mode == "identity"
    assert count(model, (3, 32, 32)).relus == plan.count(sites)
    assert "s1_0_relu1" in {n.name for n in trace(model).graph.nodes}


def test_partial_relu_matches_mask_and_counts_its_positions():
    from relucut import PartialReLU

    mask = torch.rand(4, 3, 3) > 0.5
    masked, partial = ReLUSite("mask", mask), PartialReLU.from_mask(mask, (4, 3, 3))
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(partial(x), masked(x))
    assert partial.active_relus((4, 3, 3)) == masked.active_relus((4, 3, 3)) == int(mask.sum())
    channel = PartialReLU.from_mask(torch.tensor([True, False]).view(2, 1, 1), (2, 3, 3))
    assert channel.active_relus((2, 3, 3)) == 9
