"""One export artifact for every network: shallow blocks and an AC exit replay from recipe.json like a plan.

The model is a SENet ``--shallow --aux-classifier`` network on digits-sized inputs, built directly
with the fine-grained modules (frozen pixel masks, a gated block reduced to its conv-BN, an AC head
after s3) on a 4-wide ResNet10, so no training is needed to check the export."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli

from relucut import PartialReLU, RelucutError, ReLUPlan, count, find_sites
from relucut.export import MODEL_FILE, ONNX_FILE, export_model, load_export
from relucut.finegrained.artifact import export
from relucut.finegrained.aux import make_aux_head
from relucut.structure import AuxExit
from relucut.finegrained.common import freeze_all
from relucut.finegrained.gated import install_gates, remove_main_branches, set_gates
from relucut.finegrained.mask_site import install_mask_sites
from relucut.models.registry import ModelSpec
from relucut.recipe import RECIPE_FILE

SPEC = ModelSpec("resnet10", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 4})
SHALLOW = ["s2.0", "s4.0"]  # s4.0 lies past the AC exit: replaced, then dropped with s4
AUX_AFTER = "s3"

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model):
    """Non-trivial BN statistics and head weights, so folding and the AC head are exercised."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))


@pytest.fixture(scope="module")
def senet_like():
    """(model, AC head): what ``senet(..., shallow=True, aux_after="s3")`` leaves after training."""
    torch.manual_seed(0)
    model = SPEC.build()
    _, masks = install_mask_sites(model, SPEC.input_size, "pixel")
    gen = torch.Generator().manual_seed(1)
    freeze_all(masks, {n: torch.rand(m.scores.shape, generator=gen) > 0.5 for n, m in masks.items()})
    gates = install_gates(model, SHALLOW)
    set_gates(gates, 1.0)
    remove_main_branches(model, gates)
    head = make_aux_head(model, AUX_AFTER, SPEC.input_size, SPEC.num_classes)
    _randomize(model)
    _randomize(head)
    return model.eval(), head.eval()


@pytest.fixture(scope="module")
def exports(senet_like, tmp_path_factory):
    """The full shallow network and its AC exit, exported the way the SENet pipeline does."""
    model, head = senet_like
    root = tmp_path_factory.mktemp("exports")
    meta = {"method": "senet", "shallow_blocks": SHALLOW}
    full = export(root / "full", model, SPEC, shallow_blocks=SHALLOW, meta=meta)
    ac = export(root / "ac", model, SPEC, shallow_blocks=SHALLOW, aux=(head, AUX_AFTER), meta=meta)
    return {"full": (root / "full", full, model), "ac": (root / "ac", ac, AuxExit(model, head, AUX_AFTER))}


@pytest.mark.parametrize("which", ["full", "ac"])
def test_load_export_equals_the_trained_model(exports, which):
    out, summary, trained = exports[which]
    loaded = load_export(out)
    x = torch.randn(6, *SPEC.input_size)
    with torch.no_grad():
        assert (loaded(x) - trained(x)).abs().max().item() <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["cost.json", "model.onnx", "model.pt", "plan.json",
                                                       "recipe.json"]
    assert json.loads((out / "cost.json").read_text()) == summary
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["format"] == "relucut.recipe" and recipe["version"] == 2
    expected = [{"op": "replace_block", "path": path, "kind": "conv_bn_shortcut"} for path in SHALLOW]
    if which == "ac":
        expected.append({"op": "aux_exit", "after": AUX_AFTER})
    assert recipe["structure"] == expected
    ops = [t["op"] for t in recipe["transforms"]]
    assert "fold_bn" in ops and "partial_sites" in ops  # BN folding and site reduction apply here too
    kinds = {type(m) for m in loaded.modules()}
    assert torch.nn.BatchNorm2d not in kinds and PartialReLU in kinds
    assert count(loaded, SPEC.input_size).relus == summary["relus"] == count(trained, SPEC.input_size).relus


def test_pi_graph_export_of_shallow_and_ac_exports_evaluates_exactly_the_count(exports):
    from relucut.pi.graph_export import export_graph

    for out, summary, _ in exports.values():
        graph = export_graph(load_export(out), SPEC.input_size)
        assert graph.relus == summary["relus"]
        ops = {op["op"] for op in graph.ops}
        assert "partial_relu" in ops and "linear" in ops and "channel_affine" not in ops  # BNs folded


def test_ac_export_is_shallower_and_keeps_no_later_stage(exports):
    (full_dir, full, _), (ac_dir, ac, _) = exports["full"], exports["ac"]
    assert ac["conv_depth"] < full["conv_depth"] and ac["macs"] < full["macs"]
    # past the exit only the shallow s4.0's post-add ReLU held ReLUs (its inner one went with the gate)
    past_exit = int(ReLUPlan.load(full_dir / "plan.json").decisions["s4_0_relu2"].mask.sum())
    assert past_exit > 0 and ac["relus"] == full["relus"] - past_exit
    state = torch.load(ac_dir / MODEL_FILE, weights_only=True)
    assert not any(k.startswith(("s4.", "fc.")) for k in state)
    assert any(k.startswith("aux.fc.") for k in state)
    plan = ReLUPlan.load(ac_dir / "plan.json")
    assert plan.decisions and not any(name.startswith("s4_") for name in plan.decisions)


@pytest.mark.parametrize("which", ["full", "ac"])
def test_cli_count_and_pi_estimate_read_the_export(exports, which):
    out, summary, _ = exports[which]
    counted = json.loads(run_cli("count", out, "--json", check=True).stdout)
    assert counted["relus"] == summary["relus"] and counted["conv_depth"] == summary["conv_depth"]
    assert counted["macs"] == summary["macs"]
    estimated = json.loads(run_cli("pi", "estimate", out, "--json", check=True).stdout)
    assert estimated["relus"] == summary["relus"] and estimated["macs"] == summary["macs"]
    assert estimated["online_s"] > 0


@pytest.mark.parametrize("which", ["full", "ac"])
def test_onnx_runs_a_batch_of_four_like_torch(exports, which):
    import onnxruntime

    out, _, trained = exports[which]
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch in (4, 1):  # the batch axis is dynamic: the example batch was 1
        x = torch.randn(batch, *SPEC.input_size)
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, trained(x).numpy(), rtol=0, atol=1e-4)


def test_onnx_of_a_plan_only_export_has_a_dynamic_batch_too(tmp_path):
    import onnxruntime

    sites = find_sites(SPEC.build(), SPEC.input_size)
    first = sites.sites[0]
    plan = ReLUPlan.deepreduce(sites, cull=["s2"]).set_mask(first.name, torch.rand(first.shape) > 0.5)
    result = export_model(SPEC, plan, None, tmp_path / "exp")
    onnx_file = str(tmp_path / "exp" / ONNX_FILE)
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    x = torch.randn(4, *SPEC.input_size)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], result.model(x).numpy(),
                                   rtol=0, atol=1e-4)


def test_version_1_recipe_still_loads(tmp_path):
    plan = ReLUPlan.deepreduce(find_sites(SPEC.build(), SPEC.input_size), cull=["s1"])
    result = export_model(SPEC, plan, None, tmp_path / "exp", onnx=False)
    path = tmp_path / "exp" / RECIPE_FILE
    recipe = json.loads(path.read_text())
    recipe["version"] = 1
    del recipe["structure"]  # version 1 had none
    path.write_text(json.dumps(recipe))
    loaded = load_export(tmp_path / "exp")
    assert loaded.relucut_recipe.structure == []
    x = torch.randn(3, *SPEC.input_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


@pytest.mark.parametrize("problem, needle", [
    ({"op": "replace_block", "path": "s2.0", "kind": "bogus"}, "unknown block replacement kind 'bogus'"),
    ({"op": "replace_block", "path": "s9.0", "kind": "conv_bn"}, "no block 's9.0'"),
    ({"op": "aux_exit", "after": "s4"}, "stage before the last one"),
    ({"op": "grow_block", "path": "s2.0"}, "unknown structure op 'grow_block'"),
    ({"op": "aux_exit"}, "needs after"),
    ("version 3", "version 3 is not supported"),
    ("old fine-grained format", "export it again"),
])
def test_bad_recipes_give_one_line_errors(exports, tmp_path, problem, needle):
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(exports["ac"][0], out)
    recipe = json.loads((out / RECIPE_FILE).read_text())
    if problem == "version 3":
        recipe["version"] = 3
    elif problem == "old fine-grained format":
        recipe["format"] = "relucut.finegrained.recipe"
    else:
        recipe["structure"] = [problem]
    (out / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(RelucutError, match=needle.replace("(", r"\(")):
        load_export(out)
    if problem == "version 3":
        assert_one_line_error(run_cli("count", out, "--json"), needle)


def test_export_refuses_unfinished_gates_and_writes_nothing(tmp_path):
    model = SPEC.build().eval()
    install_gates(model, SHALLOW)
    with pytest.raises(RelucutError, match="gated main branch"):
        export(tmp_path / "exp", model, SPEC, shallow_blocks=SHALLOW)
    assert not (tmp_path / "exp").exists()


def test_shallow_block_of_unknown_form_is_named(tmp_path):
    model = SPEC.build().eval()
    model.s2[0] = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2))
    with pytest.raises(RelucutError, match="none of the known shallow forms"):
        export(tmp_path / "exp", model, SPEC, shallow_blocks=SHALLOW)
    assert not (tmp_path / "exp").exists()


@pytest.mark.spu  # needs .venv-spu (`make spu-env`; `make test` builds it), like tests/test_pi_measure.py
def test_pi_measure_of_a_shallow_ac_export(exports):
    out, summary, _ = exports["ac"]
    proc = run_cli("pi", "measure", out, "--runs", "2", "--json", check=True)
    measured = json.loads(proc.stdout)["measurements"][0]
    assert measured["matches"] and measured["relus"] == summary["relus"]
    assert measured["meta"]["graph_relus"] == summary["relus"]  # the secure engine pays exactly the count
