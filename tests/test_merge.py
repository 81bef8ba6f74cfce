"""Exact linear-layer merging: conv algebra against torch, BN folding, graph merges, shallow blocks."""

import pytest
import torch
from torch import nn

from relucut import ReLUPlan, count, find_sites, trace
from relucut.export import planned_model, reduce_model
from relucut.merge import (
    bn_affine,
    combine,
    compose,
    conv_affine,
    fold_bn,
    fold_bn_pairs,
    identity_affine,
    propagate_shapes,
)
from relucut.models.registry import ModelSpec
from relucut.structure import shallow_replacement
from relucut.models.resnet import BasicBlock


pytestmark = pytest.mark.usefixtures("one_thread")


def _affine_of(module, x):
    """The Affine of a conv or BN at input ``x``, with shapes from running it."""
    y = module(x)
    if isinstance(module, nn.BatchNorm2d):
        return bn_affine(module, tuple(x.shape[1:]), True)
    return conv_affine(module, tuple(x.shape[1:]), tuple(y.shape[1:]), True)


def _run(aff, x):
    y = nn.functional.conv2d(x.double(), aff.weight, aff.bias, aff.stride, aff.padding, 1, aff.groups)
    return y + aff.bias_map if aff.bias_map is not None else y


def _random_bn(c):
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


# (first, second, input size): each pair composes exactly
EXACT_PAIRS = {
    "3x3 then 1x1": (lambda: nn.Conv2d(3, 5, 3, padding=1), lambda: nn.Conv2d(5, 4, 1), 7),
    "1x1 then padded 3x3 (bias map)": (lambda: nn.Conv2d(3, 5, 1), lambda: nn.Conv2d(5, 4, 3, padding=1), 6),
    "strided 3x3 then 1x1": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), lambda: nn.Conv2d(5, 4, 1), 9),
    "1x1 then strided padded 3x3": (lambda: nn.Conv2d(3, 5, 1), lambda: nn.Conv2d(5, 4, 3, 2, 1), 8),
    "depthwise then pointwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), lambda: nn.Conv2d(4, 6, 1), 5),
    "depthwise then depthwise 1x1": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                     lambda: nn.Conv2d(4, 4, 1, groups=4), 5),
    "unpadded 3x3 then unpadded 3x3": (lambda: nn.Conv2d(3, 4, 3), lambda: nn.Conv2d(4, 2, 3, stride=2), 11),
    "BN then padded 3x3 (bias map)": (lambda: _random_bn(3), lambda: nn.Conv2d(3, 4, 3, padding=1), 6),
}


@pytest.mark.parametrize("case", list(EXACT_PAIRS))
def test_compose_matches_the_two_layers(case):
    first, second, size = (f() if callable(f) else f for f in EXACT_PAIRS[case])
    first, second = first.double().eval(), second.double().eval()
    x = torch.randn(2, first.in_channels if hasattr(first, "in_channels") else first.num_features,
                    size, size, dtype=torch.float64)
    merged = compose(_affine_of(first, x), _affine_of(second, first(x)))
    assert merged is not None
    torch.testing.assert_close(_run(merged, x), second(first(x)), atol=1e-10, rtol=0)


def test_two_padded_3x3_convs_do_not_compose():
    """The basic-block pair: the second conv's zero padding cannot be expressed by one conv."""
    a, b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    assert compose(_affine_of(a, x), _affine_of(b, a(x))) is None


def test_combine_absorbs_an_identity_and_a_projection():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    conv = nn.Conv2d(4, 4, 3, padding=1).double()
    identity = combine(_affine_of(conv, x), identity_affine((4, 6, 6), True))
    torch.testing.assert_close(_run(identity, x), conv(x) + x, atol=1e-10, rtol=0)
    strided, project = nn.Conv2d(4, 6, 3, 2, 1).double(), nn.Conv2d(4, 6, 1, 2).double()
    both = combine(_affine_of(strided, x), _affine_of(project, x))
    torch.testing.assert_close(_run(both, x), strided(x) + project(x), atol=1e-10, rtol=0)


def test_fold_bn_is_exact_and_removes_every_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _random_bn(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, groups=2, bias=False), _random_bn(4)).eval()
    gm = trace(model)
    propagate_shapes(gm, (3, 8, 8))
    pairs = fold_bn_pairs(gm)
    assert len(pairs) == 2
    fold_bn(gm, pairs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), model(x), atol=1e-5, rtol=0)


def _randomize(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    return model


def test_linear_inverted_residual_becomes_one_conv_with_fewer_macs():
    """MobileNetV2 with every ReLU dropped: expand, depthwise, project and the identity merge."""
    spec = ModelSpec("mobilenet_v2", 10, 3, 8, {"alpha": 0.25})
    sites = find_sites(spec.build(), spec.input_size)
    plan = ReLUPlan.deepreduce(sites, cull=list(sites.stage_names))
    applied = _randomize(planned_model(spec, plan))
    reduced, steps = reduce_model(applied, spec.input_size, bias_maps=True)
    before, after = count(applied, spec.input_size), count(reduced, spec.input_size)
    assert any(s["op"] == "merge_residual" for s in steps)
    assert after.macs < before.macs and after.conv_depth < before.conv_depth
    x = torch.randn(3, *spec.input_size)
    assert (reduced(x) - applied(x)).abs().max() <= 1e-4
    # without bias maps the graph stays plain modules: fewer merges, still exact
    plain, _ = reduce_model(applied, spec.input_size)
    assert not any(n.op == "get_attr" for n in plain.graph.nodes)
    assert any(n.op == "get_attr" for n in reduced.graph.nodes)
    assert count(plain, spec.input_size).conv_depth > after.conv_depth
    assert (plain(x) - applied(x)).abs().max() <= 1e-4


def test_force_merges_more_but_default_never_raises_macs():
    spec = ModelSpec("mobilenet_v1", 10, 3, 8, {"alpha": 0.125})
    sites = find_sites(spec.build(), spec.input_size)
    # inner thinning drops the ReLU between each depthwise and pointwise conv, so those pairs merge
    plan = ReLUPlan.deepreduce(sites, thin=list(sites.stage_names), thin_style="inner")
    applied = _randomize(planned_model(spec, plan))
    base = count(applied, spec.input_size)
    default, _ = reduce_model(applied, spec.input_size)
    forced, _ = reduce_model(applied, spec.input_size, force=True)
    assert count(default, spec.input_size).macs <= base.macs
    forced_cost = count(forced, spec.input_size)
    assert forced_cost.conv_depth < count(default, spec.input_size).conv_depth
    assert forced_cost.macs > base.macs  # depthwise + pointwise merged densely
    x = torch.randn(2, *spec.input_size)
    assert (forced(x) - applied(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("stride, cin", [(1, 8), (2, 4)])
def test_shallow_replacement_keeps_the_block_shape_with_fresh_weights(stride, cin):
    block = BasicBlock(cin, 8, stride).eval()
    pair = shallow_replacement(block).eval()
    x = torch.randn(2, cin, 8, 8)
    inner = block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(x)))))
    assert pair(x).shape == inner.shape
    assert sum(isinstance(m, nn.Conv2d) for m in pair.modules()) == 1
    assert pair.conv.weight.shape[1:] == (cin, 3, 3) and pair.conv.stride == (stride, stride)
    assert not any(p is q for p in pair.parameters() for q in block.parameters())
    with pytest.raises(TypeError):
        shallow_replacement(nn.Conv2d(3, 3, 3))
