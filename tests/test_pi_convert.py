"""The torch -> JAX converter on many zoo forms, checked in plaintext (no 2PC): fast and exact."""

import numpy as np
import pytest
import torch

import relucut
from relucut import ReLUPlan, create_model, find_sites
from relucut.errors import RelucutError
from relucut.pi.graph_export import export_graph
from relucut.pi.measure import plain_outputs
from relucut.plan import apply_plan


def _randomize_bn(model):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.spu  # plain_outputs runs the JAX rebuild in the SPU environment (make spu-env)
def test_converted_graphs_equal_pytorch(tmp_path):
    from fixtures.tv_resnet import TorchvisionResNet18

    from relucut.export import export_model, load_export
    from relucut.models.registry import ModelSpec

    torch.manual_seed(0)
    size = (3, 16, 16)
    resnet = _randomize_bn(create_model("resnet18", num_classes=10, base_width=4, blocks=[1, 1, 1, 1], rho=0.5))
    sites = find_sites(resnet, size)
    mask = torch.zeros(sites.sites[3].shape, dtype=torch.bool)
    mask[::2] = True  # a per-position mask on one site, another site dropped
    plan = ReLUPlan().set_mask(sites.sites[3].name, mask).drop(sites.sites[5].name)
    spec = ModelSpec(name="resnet18", num_classes=10, in_chans=3, image_size=16,
                     kwargs={"base_width": 4, "blocks": [1, 1, 1, 1]})
    export_sites = find_sites(spec.build(), size)
    export_plan = ReLUPlan.deepreduce(export_sites, cull=["s1"])
    last = export_sites.sites[-1]
    export_plan.set_mask(last.name, torch.ones(last.shape, dtype=torch.bool).tril())  # (32, 2, 2): 3 of 4 kept
    export_model(spec, export_plan, None, tmp_path / "exp", onnx=False)
    exported = load_export(tmp_path / "exp")
    partial = [m for m in exported.modules() if isinstance(m, relucut.PartialReLU)]
    assert len(partial) == 1 and partial[0].index.numel() == 3 * last.numel // 4
    models = [
        exported,  # PartialReLU (gather -> ReLU -> gather), merged convs
        apply_plan(resnet, plan, size),  # avg-pool input resize, masked + dropped sites
        _randomize_bn(create_model("vgg16", num_classes=10, alpha=0.125)),  # max-pool (ceil), torch.mean
        _randomize_bn(create_model("mobilenet_v2", num_classes=10, alpha=0.25)),  # depthwise convs
        _randomize_bn(TorchvisionResNet18(num_classes=10)),  # max-pool stem, a ReLU module reused
    ]
    for ref, plain in plain_outputs(models, size):
        assert ref.shape == plain.shape
        np.testing.assert_allclose(plain, ref, rtol=1e-4, atol=1e-4)


def test_graph_counts_match_relucut_count():
    model = create_model("resnet18", num_classes=10, base_width=4, blocks=[1, 1, 1, 1])
    sites = find_sites(model, (3, 16, 16))
    plan = ReLUPlan.deepreduce(sites, cull=["s1"], thin=["s2"])
    mask = torch.zeros(sites.sites[-1].shape, dtype=torch.bool)
    mask.view(-1)[::5] = True
    plan.set_mask(sites.sites[-1].name, mask)
    planned = apply_plan(model, plan, (3, 16, 16)).eval()
    graph = export_graph(planned, (3, 16, 16))
    assert graph.relus == relucut.count(planned, (3, 16, 16)).relus
    ops = [op["op"] for op in graph.ops]
    assert "channel_affine" not in ops  # every BN followed a conv and was folded into it
    assert ops.count("partial_relu") == 1


def test_training_bn_without_statistics_is_an_error():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(RelucutError, match="running statistics"):
        export_graph(model, (3, 8, 8))


class _KindsNet(torch.nn.Module):
    """LayerNorm, Hardswish, a Hardsigmoid gate (a product of two activations), softmax, sigmoid, tanh."""

    def __init__(self):
        super().__init__()
        self.norm, self.up = torch.nn.LayerNorm(8), torch.nn.Linear(8, 16)
        self.act, self.gate, self.down = torch.nn.Hardswish(), torch.nn.Hardsigmoid(), torch.nn.Linear(16, 8)

    def forward(self, x):  # (N, 5 tokens, 8)
        h = self.up(self.norm(x))
        h = self.down(self.act(h) * self.gate(h)) / 2.0
        return torch.softmax(h, dim=-1) + torch.sigmoid(h).tanh()


@pytest.mark.spu  # plain_outputs runs the JAX rebuild in the SPU environment
def test_converter_carries_the_per_element_kinds():
    from fixtures.attention_nets import ConvSiLUGELU, ExplicitAttention

    torch.manual_seed(0)
    for model, size in ((ExplicitAttention(8), (5, 8)), (_KindsNet(), (5, 8)), (ConvSiLUGELU(), (3, 8, 8))):
        ops = {op["op"] for op in export_graph(model.eval(), size).ops}
        kinds = set(relucut.count(model, size).smooth_by_kind)
        # every counted kind has its op in the graph (graph op names: layer_norm for layernorm)
        assert {k.replace("layernorm", "layer_norm") for k in kinds} <= ops, (kinds, ops)
        for ref, plain in plain_outputs([model], size):
            np.testing.assert_allclose(plain, ref, rtol=1e-4, atol=1e-5)
