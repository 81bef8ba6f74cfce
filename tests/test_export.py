"""Export: every zoo model under several plans, recipe replay, ONNX, CLI, and errors that write nothing."""

import json

import onnx
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from torch import nn

import relucut
from relucut import PartialReLU, RelucutError, ReLUPlan, ReLUSite, count, find_sites
from relucut.export import MODEL_FILE, ONNX_FILE, export_model, load_checkpoint, load_export, planned_model
from relucut.models.registry import ModelSpec
from relucut.recipe import RECIPE_FILE

IMAGE = 8  # tiny inputs and widths keep the whole zoo under a few seconds per model


pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(name):
    return ModelSpec(name, 10, 3, IMAGE, {"alpha": 0.125})


def _plans(sites):
    stages = list(sites.stage_names)
    gen = torch.Generator().manual_seed(1)
    masks = ReLUPlan()  # sites in turn: pixel mask, channel mask, dropped, kept
    for i, s in enumerate(sites):
        if i % 4 == 0:
            masks.set_mask(s.name, torch.rand(s.shape, generator=gen) > 0.5)
        elif i % 4 == 1:
            masks.set_mask(s.name, (torch.rand(s.shape[0], generator=gen) > 0.5).view(-1, 1, 1))
        elif i % 4 == 2:
            masks.drop(s.name)
    return {
        "cull and thin": ReLUPlan.deepreduce(sites, cull=stages[:2], thin=stages[2:]),
        "linear": ReLUPlan.deepreduce(sites, cull=stages),
        "masks": masks,
    }


def _trained_like(spec, plan, seed=3):
    """A plan-applied model with non-trivial BN statistics, as a checkpoint would hold."""
    model = planned_model(spec, plan, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


# Each is another zoo model's graph with more blocks (resnet20's, resnet18's) or other widths (the
# HybReNets are resnet18's): the full suite exports them too, the everyday subset one of each graph.
SAME_GRAPH_AS_A_SMALLER_ONE = {"resnet32", "resnet56", "resnet110", "resnet34", "hrn_2x2x2x", "hrn_4x4x4x",
                               "hrn_5x5x3x", "hrn_5x7x2x", "hrn_6x6x2x", "hrn_7x5x2x"}
ZOO = [pytest.param(name, marks=pytest.mark.slow) if name in SAME_GRAPH_AS_A_SMALLER_ONE else name
       for name in relucut.list_models()]


@pytest.mark.parametrize("name", ZOO)
def test_export_matches_plan_applied_model(name, tmp_path):
    spec = _spec(name)
    sites = find_sites(spec.build(), spec.input_size)
    x = torch.randn(2, *spec.input_size)
    for label, plan in _plans(sites).items():
        applied = _trained_like(spec, plan)
        out = tmp_path / label.replace(" ", "_")
        bias_maps = label == "linear"  # plain modules otherwise, as 2PC engines read them
        result = export_model(spec, plan, applied.state_dict(), out, onnx=False, bias_maps=bias_maps)
        loaded = load_export(out)
        with torch.no_grad():
            expected, got = applied(x), loaded(x)
        assert (expected - got).abs().max().item() <= 1e-4, f"{name} / {label}"
        after = count(loaded, spec.input_size)
        assert after.relus == plan.count(sites) == result.recipe.after["relus"], f"{name} / {label}"
        assert after.macs <= result.recipe.before["macs"], f"{name} / {label}"
        kinds = [type(m) for m in loaded.modules()]
        assert nn.BatchNorm2d not in kinds or name == "wrn22_8", f"{name} / {label}: BN left"
        assert not any(isinstance(m, ReLUSite) and m.mode != "relu" for m in loaded.modules())
        assert bias_maps or not any(n.op == "get_attr" for n in loaded.graph.nodes)
        masked = sum(d.action == "mask" for d in plan.decisions.values())
        assert kinds.count(PartialReLU) == masked


def test_recipe_replay_reproduces_outputs_exactly_without_pickles(tmp_path):
    spec = _spec("mobilenet_v2")
    sites = find_sites(spec.build(), spec.input_size)
    plan = _plans(sites)["linear"]
    applied = _trained_like(spec, plan)
    result = export_model(spec, plan, applied.state_dict(), tmp_path / "out", onnx=False, bias_maps=True)
    assert any(t["op"] == "merge_chain" for t in result.recipe.transforms)
    x = torch.randn(3, *spec.input_size)
    with torch.no_grad():
        first, second = load_export(tmp_path / "out")(x), load_export(tmp_path / "out")(x)
        assert torch.equal(first, result.model(x)) and torch.equal(first, second)
    state = torch.load(tmp_path / "out" / MODEL_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    recipe = json.loads((tmp_path / "out" / RECIPE_FILE).read_text())
    assert recipe["format"] == "relucut.recipe" and recipe["version"] == 2 and recipe["structure"] == []
    assert ReLUPlan.from_dict(recipe["plan"]) == plan
    assert ModelSpec.from_dict(recipe["model"]) == spec


def test_checkpoint_with_model_key_and_plain_state_dict_agree(tmp_path):
    spec = _spec("resnet9")
    sites = find_sites(spec.build(), spec.input_size)
    plan = _plans(sites)["masks"]
    state = _trained_like(spec, plan).state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save(state, tmp_path / "plain.pt")
    x = torch.randn(2, *spec.input_size)
    outputs = []
    for ckpt in ("wrapped.pt", "plain.pt"):
        out = tmp_path / ckpt.replace(".pt", "")
        export_model(spec, plan, load_checkpoint(tmp_path / ckpt), out, onnx=False)
        outputs.append(load_export(out)(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def _onnx_relus(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return sum(node.op_type == "Relu" for node in model.graph.node)


def test_cli_export_then_count_equals_plan_count_and_onnx_has_no_dropped_relus(tmp_path):
    args = ["--dataset", "digits", "--alpha", "0.125", "--cull", "stem,s1", "--thin", "s2,s3,s4"]
    run_cli("export", "resnet18", *args, "--out", tmp_path / "exp", check=True)
    counted = json.loads(run_cli("count", tmp_path / "exp", "--json", check=True).stdout)
    spec = ModelSpec("resnet18", 10, 1, 8, {"alpha": 0.125})  # what the options above build
    sites = find_sites(spec.build(), spec.input_size)
    plan = ReLUPlan.deepreduce(sites, cull=["stem", "s1"], thin=["s2", "s3", "s4"])
    planned = count(spec.build(), spec.input_size, plan=plan)
    assert counted["relus"] == planned.relus == plan.count(sites) < planned.relus_full
    assert counted["macs"] <= planned.macs
    active_sites = sum(1 for s in planned.sites if s.relus > 0)
    assert _onnx_relus(tmp_path / "exp" / ONNX_FILE) == active_sites < len(planned.sites)


def test_onnx_of_masked_sites_has_one_relu_per_partial_site(tmp_path):
    spec = _spec("resnet6")
    sites = find_sites(spec.build(), spec.input_size)
    plan = _plans(sites)["masks"]
    export_model(spec, plan, None, tmp_path / "exp")
    active = sum(1 for s in sites if plan.active(s) > 0)
    assert _onnx_relus(tmp_path / "exp" / ONNX_FILE) == active


@pytest.mark.parametrize("problem", ["unknown site", "mask shape", "corrupt file", "foreign checkpoint"])
def test_bad_inputs_give_one_line_error_and_write_nothing(problem, tmp_path):
    spec = ModelSpec("resnet6", 10, 1, 8, {"alpha": 0.125})  # what --dataset digits --alpha 0.125 builds
    plan_path, ckpt = tmp_path / "plan.json", []
    if problem == "unknown site":
        ReLUPlan().drop("s9_0_relu").save(plan_path)
    elif problem == "mask shape":
        ReLUPlan().set_mask("s1_0_relu", torch.ones(2, 2, 2, dtype=torch.bool)).save(plan_path)
    elif problem == "corrupt file":
        plan_path.write_text('{"format": "relucut.plan", "version": 1, "sites": {"s1_0_relu": {"act')
    else:
        ReLUPlan().drop("s1_0_relu").save(plan_path)
        torch.save({"model": nn.Linear(2, 2).state_dict()}, tmp_path / "other.pt")
        ckpt = ["--checkpoint", tmp_path / "other.pt"]
    # a previous export in --out must survive untouched
    out = tmp_path / "exp"
    export_model(spec, ReLUPlan().drop("stem_relu"), None, out, onnx=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run_cli("export", "resnet6", "--dataset", "digits", "--alpha", "0.125", "--plan", plan_path,
                   "--out", out, *ckpt)
    assert_one_line_error(proc, {"unknown site": "s9_0_relu", "mask shape": "mask for site",
                                 "corrupt file": "corrupt plan", "foreign checkpoint": "does not fit"}[problem])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    with pytest.raises(RelucutError):
        state = load_checkpoint(tmp_path / "other.pt") if ckpt else None
        export_model(spec, ReLUPlan.load(plan_path), state, fresh)
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_refuses_a_directory_that_is_not_an_export(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RelucutError, match="not a relucut export"):
        export_model(_spec("resnet6"), ReLUPlan(), None, tmp_path, onnx=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_user_model_with_a_reused_relu_exports_per_call(tmp_path):
    """An fx-traced user model: its ReLU module is called twice; the plan drops one call only."""
    spec = ModelSpec("fixtures.tv_resnet:TorchvisionResNet18", 10, 3, 16, {"width": 8})
    sites = find_sites(spec.build(), spec.input_size)
    channel = torch.zeros(sites["layer2_0_relu"].shape[0], 1, 1, dtype=torch.bool)
    channel[::2] = True
    plan = ReLUPlan().drop("layer1_0_relu").set_mask("layer2_0_relu", channel)
    applied = _trained_like(spec, plan)
    export_model(spec, plan, applied.state_dict(), tmp_path / "exp")
    loaded = load_export(tmp_path / "exp")
    x = torch.randn(2, *spec.input_size)
    with torch.no_grad():
        assert (loaded(x) - applied(x)).abs().max().item() <= 1e-4
    assert count(loaded, spec.input_size).relus == plan.count(sites)
    assert _onnx_relus(tmp_path / "exp" / ONNX_FILE) == len(sites) - 1


def test_trained_run_exports_with_its_own_model_plan_and_weights(tmp_path):
    """`relucut export RUN_DIR`: the run's config gives spec and plan, best.pt the weights, and the
    export classifies the test split exactly as the trained run did."""
    from typer.testing import CliRunner

    from relucut.cli.app import _register, app
    from relucut.data import load_dataset
    from relucut.train import TrainConfig, evaluate, load_checkpoint_model, train

    spec = ModelSpec("resnet6", 10, 1, 8, {"base_width": 4})
    plan = ReLUPlan.deepreduce(find_sites(spec.build(), spec.input_size), cull=["stem", "s1"])
    digits = load_dataset("digits")
    cfg = TrainConfig(model=spec.to_dict(), dataset="digits", plan=plan.to_dict(), epochs=2, lr=0.05,
                      schedule="cosine", batch_size=64)
    final = train(cfg, tmp_path / "run", progress=False, data=digits)

    _register()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["after"]["relus"] == plan.count(find_sites(spec.build(), spec.input_size))
    assert summary["before"]["relus"] == summary["after"]["relus"] and "fold_bn" in summary["transforms"]
    exported = load_export(tmp_path / "exp")
    meta = exported.relucut_recipe.meta
    assert meta["normalize"]["mean"] == pytest.approx(list(digits.mean))
    assert meta["epochs_trained"] == final["best_epoch"]  # both count epochs from 1
    trained = load_checkpoint_model(tmp_path / "run")
    x = torch.randn(4, *spec.input_size)
    with torch.no_grad():
        assert (exported(x) - trained(x)).abs().max().item() <= 1e-4
    test_acc = evaluate(exported, digits, split="test")["acc"]
    assert abs(test_acc - final["test_acc"]) <= 1 / len(digits.test.labels)  # a BN-folding rounding tie at most

    proc = run_cli("export", tmp_path / "run", "--out", tmp_path / "other", "--cull", "s2")
    assert_one_line_error(proc, "trained run", "--cull")
    assert not (tmp_path / "other").exists()
