"""Every non-linearity and every MAC counted: LayerNorm, softmax, attention on every PyTorch path,
SiLU, GELU, max/exp/division, torch.nn's Transformer layers, and per-stage MACs of user models,
each against a hand formula."""

import json

import pytest
import torch
from conftest import run_cli
from fixtures.attention_nets import (
    ConvSiLUGELU,
    ExplicitAttention,
    ManualSoftmax,
    MHABlock,
    SDPABlock,
    TwoStageNet,
)
from torch import nn

from relucut import count

pytestmark = pytest.mark.usefixtures("one_thread")

T, D, HEADS = 5, 8, 2  # tokens, width, heads of the attention blocks
HEAD_DIM = D // HEADS
ATTENTION_MACS = HEADS * T * T * (HEAD_DIM + HEAD_DIM)  # Q.K^T and A.V per head
SOFTMAX = HEADS * T * T


class EncoderLayerNet(nn.Module):
    """torch.nn.TransformerEncoderLayer, which fx keeps whole (its forward branches on tensors)."""

    def __init__(self, activation="relu"):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, batch_first=True,
                                                activation=activation)

    def forward(self, x):
        return self.layer(x)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_block(training, batch_first):
    model = MHABlock(D, HEADS, batch_first=batch_first).train(training)
    report = count(model, (T, D))
    assert report.smooth_by_kind == {"layernorm": 2 * T * D, "softmax": SOFTMAX, "matmul": ATTENTION_MACS,
                                     "gelu": T * 4 * D}
    weights = T * D * 3 * D + T * D * D + T * D * 4 * D + T * 4 * D * D  # in_proj, out_proj, fc1, fc2
    assert report.weight_macs == weights and report.macs == weights + ATTENTION_MACS
    assert report.relus == report.comparisons == 0
    assert model.training is training and torch.backends.mha.get_fastpath_enabled()


@pytest.mark.parametrize("training", [False, True])
def test_fused_sdpa_block(training):
    report = count(SDPABlock(D, HEADS).train(training), (T, D))
    assert report.smooth_by_kind == {"softmax": SOFTMAX, "matmul": ATTENTION_MACS}
    assert report.macs == T * D * 3 * D + T * D * D + ATTENTION_MACS
    assert report.macs_by_module == {"qkv": T * D * 3 * D, "proj": T * D * D, "": ATTENTION_MACS}


def test_explicit_matmuls_and_softmax():
    report = count(ExplicitAttention(D), (T, D))
    assert report.smooth_by_kind == {"matmul": 2 * T * T * D, "softmax": T * T}
    assert report.macs == 3 * T * D * D + 2 * T * T * D


def test_manual_softmax_counts_max_exp_and_division():
    report = count(ManualSoftmax(), (T, D))
    assert report.comparisons_by_kind == {"max": T * D - T}  # a max over D values: D - 1 comparisons per row
    assert report.smooth_by_kind == {"exp": T * D, "div": T * D}
    assert report.comparisons == T * D - T


@pytest.mark.parametrize("activation, kind, comparisons", [("relu", "relu", 5 * 16), ("gelu", "gelu", 0)])
def test_torch_transformer_encoder_layer(activation, kind, comparisons):
    report = count(EncoderLayerNet(activation), (T, D))
    smooth = {"layernorm": 2 * T * D, "softmax": SOFTMAX, "matmul": ATTENTION_MACS}
    assert report.smooth_by_kind == ({**smooth, "gelu": T * 16} if kind == "gelu" else smooth)
    assert report.comparisons == comparisons and report.relus == 0  # inside the layer: counted, no plan site
    assert report.macs == T * D * 3 * D + T * D * D + 2 * T * D * 16 + ATTENTION_MACS


def test_silu_and_gelu_per_element_and_conv_macs():
    report = count(ConvSiLUGELU(), (3, 8, 8))
    assert report.smooth_by_kind == {"silu": 8 * 8 * 8, "gelu": 8 * 8 * 8}
    assert report.macs == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 8 * 9 + 8 * 10
    assert report.activation_macs == 0 and report.weight_macs == report.macs


def test_user_model_macs_go_to_the_stage_of_the_relu_they_feed():
    report = count(TwoStageNet(), (3, 8, 8))
    assert report.stage_names == ("s1", "s2")
    assert report.relus_by_stage == {"s1": 8 * 8 * 8, "s2": 16 * 4 * 4}
    # the classifier comes after the last ReLU: it goes with the last stage
    assert report.macs_by_stage == {"s1": 8 * 8 * 8 * 27, "s2": 16 * 4 * 4 * 72 + 16 * 10}
    assert sum(report.macs_by_stage.values()) == report.macs


def test_a_model_without_plan_sites_has_its_macs_by_top_level_module():
    from fixtures.attention_nets import TinyViT

    report = count(TinyViT(), (3, 32, 32))
    tokens, dim = 64, 16
    attention = 2 * tokens * tokens * dim
    assert report.stage_names == () and report.macs_by_stage == {
        "embed": tokens * dim * 3 * 16, "block": tokens * dim * dim * (3 + 1 + 4 + 4) + attention, "head": dim * 10}


def test_layernorm_elements_on_sequence_first_tensors():
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(D)

        def forward(self, x):  # (N, T, D) -> (T, N, D): the batch of one is no longer dim 0
            return torch.softmax(self.norm(x.transpose(0, 1)), dim=-1)

    assert count(SeqFirst(), (T, D)).smooth_by_kind == {"layernorm": T * D, "softmax": T * D}


def test_products_with_weights_are_linear_and_products_of_activations_are_not():
    class Gates(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(D))
            self.fc = nn.Linear(D, D)

        def forward(self, x):
            x = x * self.scale / 3.0  # a weight and a constant: linear
            return x * torch.sigmoid(self.fc(x)) / (x.abs() + 1) + x ** 2

    report = count(Gates(), (T, D))
    assert report.smooth_by_kind == {"sigmoid": T * D, "mul": 2 * T * D, "div": T * D}  # gate product, square
    assert report.comparisons_by_kind == {"abs": T * D}


def test_cli_count_and_estimate_print_one_unpriced_line():
    net = "fixtures.attention_nets:tiny_vit"
    proc = run_cli("count", net, "--json", check=True)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "lower bound" in lines[0]
    for label in ("LayerNorm 3,072", "Softmax 8,192", "GELU 4,096", "activation matmul MACs 131,072"):
        assert label in lines[0]
    data = json.loads(proc.stdout)
    tokens, dim = 8 * 8, 16
    assert data["nonlinear_by_kind"] == {"relu": 0, "layernorm": 3 * tokens * dim, "softmax": 2 * tokens * tokens,
                                         "matmul": 2 * tokens * tokens * 16, "gelu": tokens * 4 * dim}
    assert data["pi_estimate"]["lower_bound"] is True
    assert data["pi_estimate"]["unpriced"]["layernorm"] == 3 * tokens * dim

    table = run_cli("count", net, check=True)
    assert "at least" in table.stdout and "lower bound" in table.stderr

    est = run_cli("pi", "estimate", net, "--json", check=True)
    line = est.stderr.strip().splitlines()
    assert len(line) == 1 and "delphi estimate is a lower bound" in line[0] and "Softmax 8,192" in line[0]
    payload = json.loads(est.stdout)
    assert payload["lower_bound"] is True and payload["unpriced"]["gelu"] == tokens * 4 * dim
    assert payload["priced_share"] == 0.0  # no comparison at all: nothing delphi prices

    human = run_cli("pi", "estimate", net, check=True)
    assert ">= " in human.stdout and "lower bound" in human.stderr
    plain = run_cli("pi", "estimate", "resnet20", "--json", check=True)
    assert plain.stderr.strip() == "" and json.loads(plain.stdout)["lower_bound"] is False


def test_a_graph_module_counts_the_same_macs():
    """fx.GraphModules (sitify, exports) call s1.0.conv without calling s1.0: each MAC counted once."""
    from relucut import sitify

    for model, size in ((TwoStageNet(), (3, 8, 8)), (SDPABlock(D, HEADS), (T, D)), (MHABlock(D, HEADS), (T, D))):
        nested = nn.Sequential(nn.Sequential(model))  # s1.0-style paths, then traced flat
        assert count(sitify(nested), size).macs == count(model, size).macs
        assert count(sitify(nested), size).smooth_by_kind == count(model, size).smooth_by_kind


@pytest.mark.parametrize("name, relus", [("resnet18", 557_056), ("resnet20", None), ("vgg16", None)])
def test_relu_networks_gain_no_new_kind(name, relus):
    """The new kinds leave ReLU networks as they were: ReLUs and max-pools only, MACs all with weights."""
    from relucut import create_model

    report = count(create_model(name, num_classes=100), (3, 32, 32))
    assert set(report.nonlinear_by_kind) <= {"relu", "maxpool"} and report.smooth_by_kind == {}
    assert report.weight_macs == report.macs and report.activation_macs == 0
    assert relus is None or report.relus == report.comparisons == relus
    assert sum(report.macs_by_stage.values()) == report.macs
