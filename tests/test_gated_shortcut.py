"""Gated branching keeps the residual shortcut and the post-add ReLU, deciding per ReLU layer.

The shallow paper drops each ReLU layer whose sensitivity is below d_th and merges the conv-BN
pairs on either side of a dropped inner ReLU: a block becomes conv-BN + shortcut, then its post-add
ReLU (with its mask), which goes only if it is itself below d_th."""

import json

import pytest
import torch
from conftest import run_cli
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base
from torch import nn

from relucut import ReLUSite, count, find_sites
from relucut.export import export_model, load_export
from relucut.structure import BLOCK_REPLACEMENTS, build_replacement
from relucut.finegrained.common import freeze_all
from relucut.finegrained.gated import (
    GatedBranch,
    below_threshold,
    install_gates,
    layer_sensitivity,
    remove_main_branches,
    set_gates,
)
from relucut.finegrained.mask_site import install_mask_sites
from relucut.finegrained.pipeline import run_senet
from relucut.methods.senet import SENetConfig
from relucut.structure import ConvBNShortcut, shallow_shortcut_replacement
from relucut.models.resnet import BasicBlock
from relucut.plan import ReLUPlan

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_bn(module, seed=3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


@pytest.mark.parametrize("stride, cin", [(1, 8), (2, 4)])  # identity shortcut, projection shortcut
def test_replaced_block_is_conv_bn_plus_shortcut_then_its_post_add_site(stride, cin):
    block = BasicBlock(cin, 8, stride)
    mask = torch.rand(8, 8 // stride, 8 // stride, generator=torch.Generator().manual_seed(0)) > 0.5
    block.relu2 = ReLUSite("mask", mask)
    _randomize_bn(block)
    shallow = shallow_shortcut_replacement(block).eval()
    assert isinstance(shallow, ConvBNShortcut)
    assert shallow.shortcut is block.shortcut and shallow.relu2 is block.relu2  # kept, not rebuilt
    assert isinstance(shallow.shortcut, nn.Identity) == (stride == 1)
    _randomize_bn(shallow.bn, seed=4)
    x = torch.randn(3, cin, 8, 8)
    pre = shallow.bn(shallow.conv(x)) + block.shortcut(x)
    assert torch.equal(shallow(x), torch.where(mask, torch.relu(pre), pre))
    assert sum(isinstance(m, nn.Conv2d) for m in shallow.modules()) == (1 if stride == 1 else 2)


def test_gated_block_at_gamma_one_is_its_shallow_block_and_at_zero_the_block():
    block = BasicBlock(4, 8, 2)
    _randomize_bn(block)
    gate = GatedBranch(block, shallow_shortcut_replacement(block)).eval()
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(gate(x), block.eval()(x), atol=1e-6)
    gate.gamma.fill_(1.0)
    assert torch.allclose(gate(x), gate.shallow(x), atol=1e-6)


def _masked_model(inner_s1: float, post_add_s1: float, other: float = 0.5):
    """SPEC's ResNet18 with frozen pixel masks: s1 inner/post-add sites keep the given fractions,
    every other site ``other``. Returns (model, sites, layer budget)."""
    torch.manual_seed(0)
    model = SPEC.build().eval()
    sites, masks = install_mask_sites(model, SPEC.input_size, "pixel")
    gen = torch.Generator().manual_seed(1)
    budget, binary = {}, {}
    for site in sites:
        frac = other
        if site.stage == "s1":
            frac = inner_s1 if site.module_path.endswith("relu1") else post_add_s1
        budget[site.name] = int(frac * site.numel)
        order = torch.randperm(site.numel, generator=gen)[: budget[site.name]]
        flat = torch.zeros(site.numel, dtype=torch.bool)
        flat[order] = True
        binary[site.name] = flat.view(site.shape)
    freeze_all(masks, binary)
    return model, sites, budget


def _gb(model, sites, budget, dth, drops="inner"):
    sens = layer_sensitivity(budget, {s.name: s.numel for s in sites})
    blocks, fading = below_threshold(sites, sens, dth, model, drops)
    gates = install_gates(model, blocks, fading)
    set_gates(gates, 1.0)
    remove_main_branches(model, gates)
    return blocks, fading


def test_gb_loses_only_the_inner_relus_of_shallow_blocks():
    model, sites, budget = _masked_model(inner_s1=0.05, post_add_s1=0.4)
    before = count(model, SPEC.input_size)
    blocks, fading = _gb(model, sites, budget, dth=0.1)
    assert blocks == ["s1.0", "s1.1"] and fading == []
    after = count(model, SPEC.input_size)
    inner = budget["s1_0_relu1"] + budget["s1_1_relu1"]
    assert inner > 0 and after.relus == before.relus - inner
    by_site = {c.site.name: c.relus for c in after.sites}
    assert by_site["s1_0_relu2"] == budget["s1_0_relu2"] and by_site["s1_1_relu2"] == budget["s1_1_relu2"]
    assert "s1_0_relu1" not in by_site and after.conv_depth == before.conv_depth - 2


def test_a_post_add_relu_below_dth_goes_too_the_block_keeps_its_shortcut():
    model, sites, budget = _masked_model(inner_s1=0.05, post_add_s1=0.05)
    before = count(model, SPEC.input_size)
    x = torch.randn(2, *SPEC.input_size)
    blocks, fading = _gb(model, sites, budget, dth=0.1, drops="inner+post-add")
    assert blocks == ["s1.0", "s1.1"] and fading == ["s1.0.relu2", "s1.1.relu2"]
    lost = sum(budget[f"s1_{i}_relu{j}"] for i in (0, 1) for j in (1, 2))
    assert count(model, SPEC.input_size).relus == before.relus - lost
    assert isinstance(model.s1[0], ConvBNShortcut) and model.s1[0].relu2.active_relus((4, 8, 8)) == 0
    assert model(x).shape == (2, 10)


def test_old_conv_bn_kind_still_replays(tmp_path):
    assert list(BLOCK_REPLACEMENTS)[:2] == ["conv_bn_shortcut", "conv_bn"]
    torch.manual_seed(0)
    model = SPEC.build().eval()
    model.s2[0] = build_replacement(model.s2[0], "conv_bn", "s2.0")  # an export written before the fix
    _randomize_bn(model)
    model.eval()
    structure = [{"op": "replace_block", "path": "s2.0", "kind": "conv_bn"}]
    export_model(SPEC, ReLUPlan(), model.state_dict(), tmp_path / "old", structure=structure, onnx=False)
    x = torch.randn(2, *SPEC.input_size)
    with torch.no_grad():
        assert (load_export(tmp_path / "old")(x) - model(x)).abs().max().item() <= 1e-4


@pytest.fixture(scope="module")
def senet_shallow_run(tmp_path_factory):
    data = tiny_data()
    base = trained_base(data)
    out = tmp_path_factory.mktemp("senet-shallow")
    cfg = SENetConfig(budget=600, mask_epochs=1, finetune_epochs=2, milestones=[1], shallow=True, dth=0.3)
    result = run_senet(SPEC, data, out, cfg, base=BASE, teacher=base, progress=False)
    return out, result


def test_senet_shallow_export_replays_and_counts_as_result_json(senet_shallow_run):
    out, result = senet_shallow_run
    assert result["shallow_blocks"]
    recipe = json.loads((out / "export" / "recipe.json").read_text())
    assert {op["kind"] for op in recipe["structure"]} == {"conv_bn_shortcut"}
    loaded = load_export(out / "export")
    for block in result["shallow_blocks"]:  # the post-add site of each shallow block is still a site
        assert f"{block.replace('.', '_')}_relu2" in {s.name for s in find_sites(loaded, SPEC.input_size)}
    written = json.loads((out / "result.json").read_text())
    counted = json.loads(run_cli("count", out / "export", "--json", check=True).stdout)
    assert counted["relus"] == written["result"]["relus"] == count(loaded, SPEC.input_size).relus
    assert written["result"]["relus"] <= 600
    stem = written["layer_budget"]["stem_relu"]  # without GB: the budget, the stem's share aside
    assert written["masks_only"]["relus"] - written["masks_only"]["relus_without_stem"] == stem
