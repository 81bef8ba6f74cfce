"""Users' own networks through every method from the command line.

A torchvision-shaped network (tests/fixtures/tv_resnet.py: a functional ReLU, one ``nn.ReLU``
called twice per block, a max-pool, no ``in_chans``) goes through SNL, SENet, a DeepReDuce plan
(``relucut plan`` -> ``train --plan`` -> ``export``) and the DeepReDuce search on 1-channel digits,
each to an export that onnxruntime runs as torch does; SENet + shallow runs on a user network of
zoo BasicBlocks and is refused in one line on the torchvision one; a frontier over a network with
a SiLU says once that its latencies are lower bounds.
"""

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from torch import fx, nn

from relucut import RelucutError, ReLUPlan, apply_plan, count, create_model, find_sites, sitify
from relucut.export import export_model, load_export
from relucut.models.registry import ModelSpec
from relucut.plan import _swappable
from relucut.sites import addressable
from fixtures.teachers import learned_teacher
from fixtures.tv_resnet import TinyTorchvisionNet, TorchvisionResNet18
from fixtures.user_nets import global_bn_net

TV = "fixtures.tv_resnet:tiny_tv_resnet"
ZOO_BLOCKS = "fixtures.user_nets:zoo_block_net"
SILU = "fixtures.user_nets:relu_silu_net"
DIGITS = ("--dataset", "digits")
TV_SITES = ["relu", "layers_0_0_relu", "layers_0_0_relu_1", "layers_1_0_relu", "layers_1_0_relu_1",
            "layers_2_0_relu", "layers_2_0_relu_1"]

pytestmark = pytest.mark.usefixtures("one_thread")


def onnx_difference(export_dir, name: str) -> float:
    """Largest |onnxruntime - torch| over a batch of random inputs, the torch side rebuilt by
    ``load_export`` from the recipe (spec -> structure -> plan -> transforms -> state_dict)."""
    import onnxruntime

    model = load_export(export_dir, trusted_factories=[name])
    x = torch.randn(8, *model.relucut_recipe.model.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return float(np.abs(session.run(None, {"input": x.numpy()})[0] - expected).max())


@pytest.fixture(scope="module")
def tv_teacher() -> str:
    return learned_teacher(ModelSpec(TV, 10, 1, 8), limit_train=640)


# -- the first conv reads the dataset's channels ---------------------------------------------------
def test_a_factory_without_in_chans_gets_its_first_conv_adapted():
    model = ModelSpec(TV, 10, 1, 8).build()
    assert model.conv1.in_channels == 1 and model.conv1.weight.shape == (4, 1, 3, 3)
    assert model.relucut_input_conv == "conv1" and model.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    # torchvision's factories pass **kwargs on to a class that rejects in_chans: built for RGB, then adapted
    tv_style = ModelSpec("fixtures.tv_resnet:kwargs_tiny_tv_resnet", 7, 1, 8).build()
    assert tv_style.conv1.in_channels == 1 and tv_style.fc.out_features == 7
    # RGB data leaves the factory's model as it is
    assert not hasattr(ModelSpec(TV, 10, 3, 8).build(), "relucut_input_conv")
    assert_one_line_error(run_cli("count", "fixtures.user_nets:depthwise_stem_net", *DIGITS),
                          "no plain 3-channel first conv", "add in_chans to the factory")


def test_an_export_records_the_adapted_conv_and_refuses_a_replay_that_adapts_another(tmp_path):
    spec = ModelSpec(TV, 10, 1, 8)
    export_model(spec, ReLUPlan().drop("relu"), None, tmp_path / "e", onnx=False)
    recipe = json.loads((tmp_path / "e" / "recipe.json").read_text())
    assert recipe["meta"]["adapted_input_conv"] == {"path": "conv1", "in_channels": 1}
    assert load_export(tmp_path / "e").conv1.in_channels == 1
    recipe["meta"]["adapted_input_conv"]["path"] = "stem.conv"  # as if the factory had changed
    (tmp_path / "e" / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(RelucutError, match="the factory changed: export the network again"):
        load_export(tmp_path / "e")


# -- sites made addressable: same counts, same state_dict keys, one form per architecture ---------
def test_sitify_changes_no_count_and_keeps_every_state_dict_key():
    for model, size in ((TinyTorchvisionNet(), (3, 8, 8)), (TorchvisionResNet18(width=8), (3, 32, 32))):
        plain, sitified = count(model, size), count(sitify(model), size)
        assert sitified.relus == plain.relus and sitified.macs == plain.macs and sitified.params == plain.params
        assert sitified.relus_by_stage == plain.relus_by_stage and sitified.macs_by_stage == plain.macs_by_stage
        assert sitified.nonlinear_by_kind == plain.nonlinear_by_kind
        assert set(sitify(model).state_dict()) == set(model.state_dict())
    # a traced-through batch-norm leaves num_batches_tracked out of the graph: sitify keeps it
    model = global_bn_net()
    assert "norm.bn.num_batches_tracked" in sitify(model).state_dict()
    assert set(sitify(model).state_dict()) == set(model.state_dict())


def test_a_model_is_sitified_for_plans_whatever_sites_they_name():
    zoo = create_model("resnet20", num_classes=10)
    assert addressable(zoo) is zoo  # every site a module called once: no fx copy
    model = TinyTorchvisionNet()
    assert [name for name, path in _swappable(model).items() if path is None] == TV_SITES  # maxpool is a module
    pool_only, functional = ReLUPlan().avgpool("maxpool"), ReLUPlan().drop("relu")
    for plan in (pool_only, functional):
        applied = apply_plan(model, plan, (3, 8, 8))
        assert isinstance(applied, fx.GraphModule) and set(applied.state_dict()) == set(model.state_dict())
        assert [s.name for s in find_sites(applied, (3, 8, 8))] == TV_SITES


# -- every method from the CLI ---------------------------------------------------------------------
def test_snl_on_a_torchvision_shaped_network_exports_what_onnxruntime_runs(tmp_path, tv_teacher):
    out = tmp_path / "snl"
    run_cli("snl", TV, *DIGITS, "--budget", "200", "--teacher", tv_teacher, "--search-epochs", "1",
            "--finetune-epochs", "1", "--out", out, check=True)
    result = json.loads((out / "result.json").read_text())
    assert result["result"]["relus"] == 200
    plan = ReLUPlan.load(out / "export" / "plan.json")
    assert sorted(plan.decisions) == sorted(TV_SITES)  # the functional ReLU and both calls of each module
    assert count(load_export(out / "export", trusted_factories=[TV]), (1, 8, 8)).relus == 200
    assert onnx_difference(out / "export", TV) <= 1e-4


def test_senet_on_a_torchvision_shaped_network_and_shallow_refused_in_one_line(tmp_path, tv_teacher):
    out = tmp_path / "senet"
    common = ("--budget", "200", "--teacher", tv_teacher, "--mask-epochs", "1", "--finetune-epochs", "1",
              "--milestones", "1")
    run_cli("senet", TV, *DIGITS, *common, "--out", out, check=True)
    assert json.loads((out / "result.json").read_text())["result"]["relus"] == 200
    assert onnx_difference(out / "export", TV) <= 1e-4
    refused = run_cli("senet", TV, *DIGITS, *common, "--shallow", "--out", tmp_path / "shallow")
    assert_one_line_error(refused, "--shallow replaces relucut's zoo BasicBlocks", "run senet without --shallow")
    assert not (tmp_path / "shallow").exists()


def test_senet_shallow_on_a_user_network_of_zoo_basic_blocks(tmp_path):
    teacher = learned_teacher(ModelSpec(ZOO_BLOCKS, 10, 1, 8), limit_train=640)
    out = tmp_path / "shallow"  # allocation by counts leaves blocks.0's inner ReLU exactly half: d_th 0.6
    run_cli("senet", ZOO_BLOCKS, *DIGITS, "--budget", "150", "--teacher", teacher, "--mask-epochs", "1",
            "--finetune-epochs", "1", "--milestones", "1", "--shallow", "--dth", "0.6", "--out", out, check=True)
    result = json.loads((out / "result.json").read_text())
    recipe = json.loads((out / "export" / "recipe.json").read_text())
    assert result["shallow_blocks"] and [s["path"] for s in recipe["structure"]] == result["shallow_blocks"]
    assert result["result"]["conv_depth"] < result["baseline"]["conv_depth"]
    assert result["result"]["relus"] <= 150
    assert onnx_difference(out / "export", ZOO_BLOCKS) <= 1e-4


def test_a_deepreduce_plan_trains_and_exports(tmp_path, tv_teacher):
    plan = tmp_path / "plan.json"
    run_cli("plan", TV, *DIGITS, "--cull", "s1", "--thin", "s2,s3", "--replace-maxpool", "--out", plan, check=True)
    decisions = ReLUPlan.load(plan).decisions
    # s1 is the stem's functional ReLU; thinning drops each block's second call of its reused nn.ReLU
    assert {n for n, d in decisions.items() if d.action == "drop"} == {"relu", "layers_0_0_relu_1",
                                                                       "layers_1_0_relu_1"}
    assert decisions["maxpool"].action == "avgpool"
    run_cli("train", TV, *DIGITS, "--plan", plan, "--teacher", tv_teacher, "--epochs", "1", "--limit-train", "256",
            "--out", tmp_path / "run", check=True)
    run_cli("export", tmp_path / "run", "--trust-factory", TV, "--out", tmp_path / "export", check=True)
    exported = load_export(tmp_path / "export", trusted_factories=[TV])
    assert count(exported, (1, 8, 8)).relus == 480 - 256 - 64 - 32
    assert onnx_difference(tmp_path / "export", TV) <= 1e-4


def test_the_deepreduce_search_infers_stages_from_resolution(tmp_path, tv_teacher):
    out = tmp_path / "dr"
    run_cli("deepreduce", TV, *DIGITS, "--teacher", tv_teacher, "--epochs", "1", "--criticality-epochs", "1",
            "--limit-train", "128", "--budget", "200", "--out", out, check=True)
    criticality = json.loads((out / "criticality.json").read_text())
    assert [row["stage"] for row in criticality["stages"]] == ["s1", "s2", "s3", "s4"]  # 8x8, 4x4, 2x2, 1x1
    best = json.loads((out / "best.json").read_text())
    assert best["relus"] <= 200 and best["culled"]
    assert onnx_difference(out / "export", TV) <= 1e-4


def test_the_frontier_says_once_that_unpriced_kinds_make_latencies_lower_bounds(tmp_path):
    teacher = learned_teacher(ModelSpec(SILU, 10, 1, 8))
    out = tmp_path / "fr"
    proc = run_cli("frontier", SILU, *DIGITS, "--methods", "snl", "--budget", "300", "--epochs", "1",
                   "--teacher", teacher, "--out", out, check=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "lower bound" in line]
    assert len(lines) == 1 and "SiLU 128" in lines[0], lines
    assert "The delphi estimate is a lower bound: it has no price for SiLU 128" in (out / "frontier.md").read_text()
    assert onnx_difference(out / "snl" / "300" / "export", SILU) <= 1e-4


def test_a_model_fx_cannot_trace_is_left_as_it_is():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.relu(self.conv(x)) if x.sum() > 0 else self.conv(x)

    model = Branchy()
    assert addressable(model) is model
