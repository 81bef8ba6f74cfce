"""Gated branching and the auxiliary classifier: removed main branches, lower depth, faithful export."""

import copy

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

from relucut import count
from relucut.export import load_export
from relucut.finegrained import GatedBranch, export, gate_value
from relucut.finegrained.gated import install_gates, shallow_twin
from relucut.finegrained.senet import senet
from relucut.methods.senet import SENetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gate_schedules():
    assert [gate_value(e, 90) for e in (0, 44, 89, 90, 150)] == pytest.approx([1 / 90, 45 / 90, 1, 1, 1])
    assert gate_value(44, 90, "cosine") == pytest.approx(0.5 * (1 - torch.cos(torch.tensor(torch.pi / 2))).item())
    assert gate_value(89, 90, "cosine") == pytest.approx(1.0)


def test_gated_branch_blends_main_and_shallow():
    model = SPEC.build().eval()
    block = model.s2[0]
    gate = GatedBranch(block, shallow_twin(block)).eval()
    x = torch.randn(3, 4, 8, 8)
    assert torch.allclose(gate(x), block(x))
    gate.gamma.fill_(1.0)
    assert torch.allclose(gate(x), gate.shallow(x))
    gate.gamma.fill_(0.3)  # the residual branches blend; shortcut and post-add ReLU come after
    deep = block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(x)))))
    blend = 0.3 * gate.shallow.residual(x) + 0.7 * deep + block.shortcut(x)
    assert torch.allclose(gate(x), torch.relu(blend), atol=1e-6)
    assert gate.shallow(x).shape == block(x).shape  # stride 2, 4 -> 8 channels


@pytest.fixture(scope="module")
def shallow_run(tmp_path_factory):
    data = tiny_data()
    base = trained_base(data)
    model = copy.deepcopy(base)
    cfg = SENetConfig(budget=600, mask_epochs=1, finetune_epochs=2, milestones=[1],
                      shallow=True, dth=0.5, aux_after="s3")  # s1.1 (0.49) falls below it
    result = senet(model, base, data, BASE, cfg, tmp_path_factory.mktemp("senet"), progress=False)
    return base, model, result


def test_gb_export_drops_main_branches_and_depth(shallow_run, tmp_path):
    base, model, result = shallow_run
    assert result.shallow_blocks  # some blocks fell below d_th
    assert all(result.layer_sensitivity[b.replace(".", "_") + "_relu1"] < 0.5 for b in result.shallow_blocks)
    assert not any(isinstance(m, GatedBranch) for m in model.modules())
    summary = export(tmp_path, model, SPEC, shallow_blocks=result.shallow_blocks)
    state = torch.load(tmp_path / "model.pt")
    for block in result.shallow_blocks:
        shallow = model.get_submodule(block)
        assert [name for name, _ in shallow.named_children()] == ["conv", "bn", "shortcut", "relu2"]
        keys = [k for k in state if k.startswith(block + ".")]
        assert keys and all(k.startswith(tuple(f"{block}.{p}." for p in ("conv", "bn", "shortcut", "relu2"))) for k in keys)
        assert not any(k.startswith((f"{block}.conv1.", f"{block}.conv2.", f"{block}.relu1.")) for k in state)
    loaded = load_export(tmp_path)
    assert summary["conv_depth"] < count(base, SPEC.input_size).conv_depth
    assert count(loaded, SPEC.input_size).conv_depth == summary["conv_depth"]
    assert summary["relus"] <= 600
    x = torch.randn(6, *SPEC.input_size)
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_aux_exit_export(shallow_run, tmp_path):
    _, model, result = shallow_run
    full = export(tmp_path / "full", model, SPEC, shallow_blocks=result.shallow_blocks)
    ac = export(tmp_path / "ac", model, SPEC, shallow_blocks=result.shallow_blocks, aux=(result.aux_head, "s3"))
    assert ac["conv_depth"] < full["conv_depth"] and ac["macs"] < full["macs"] and ac["relus"] <= full["relus"]
    loaded = load_export(tmp_path / "ac")
    x = torch.randn(4, *SPEC.input_size)
    model.eval()
    result.aux_head.eval()
    with torch.no_grad():
        feats = model.s3(model.s2(model.s1(model.stem(model.resize(x)))))
        assert torch.allclose(loaded(x), result.aux_head(feats), atol=1e-4)


def test_install_gates_keeps_shapes():
    model = SPEC.build().eval()
    x = torch.randn(2, *SPEC.input_size)
    before = model(x)
    gates = install_gates(model, ["s1.0", "s3.0"])
    assert torch.allclose(model(x), before, atol=1e-6)  # gamma 0: the main branch alone
    assert set(gates) == {"s1.0", "s3.0"}
