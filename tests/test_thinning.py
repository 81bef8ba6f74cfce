"""DeepReDuce thinning in two styles: post_add (the authors' zoo, default) and inner (relucut's earlier).

Both halve a basic-block stage's ReLUs, so counts are equal; they drop different layers, so the
networks are not."""

import pytest
import torch

from relucut import RelucutError, ReLUPlan, apply_plan, count, find_sites
from relucut.export import export_model, load_export
from relucut.models.registry import ModelSpec, create_model
from relucut.plan import THIN_STYLES, build_plan

pytestmark = pytest.mark.usefixtures("one_thread")


def test_post_add_is_the_default_and_drops_each_blocks_relu_after_the_add():
    assert THIN_STYLES[0] == "post_add"
    sites = find_sites(create_model("resnet18"), (3, 32, 32))
    default = ReLUPlan.deepreduce(sites, thin=["s2", "s3"])
    assert sorted(default.decisions) == ["s2_0_relu2", "s2_1_relu2", "s3_0_relu2", "s3_1_relu2"]
    assert default.meta["thin_style"] == "post_add"
    inner = ReLUPlan.deepreduce(sites, thin=["s2", "s3"], thin_style="inner")
    assert sorted(inner.decisions) == ["s2_0_relu1", "s2_1_relu1", "s3_0_relu1", "s3_1_relu1"]


@pytest.mark.parametrize("cull, thin", [([], ["s1", "s2", "s3", "s4"]), (["stem", "s1"], ["s2", "s3", "s4"])])
def test_counts_are_equal_networks_are_not(cull, thin):
    spec = ModelSpec("resnet18", num_classes=10, image_size=16, kwargs={"base_width": 8})
    torch.manual_seed(0)
    base = spec.build().eval()
    sites = find_sites(base, spec.input_size)
    plans = {style: ReLUPlan.deepreduce(sites, cull=cull, thin=thin, thin_style=style) for style in THIN_STYLES}
    counts = {style: count(base, spec.input_size, plan=p).relus for style, p in plans.items()}
    assert counts["post_add"] == counts["inner"] == plans["inner"].count(sites)
    assert counts["post_add"] < count(base, spec.input_size).relus
    x = torch.randn(4, *spec.input_size)
    with torch.no_grad():
        outputs = {style: apply_plan(base, p)(x) for style, p in plans.items()}
    assert (outputs["post_add"] - outputs["inner"]).abs().max() > 1e-3  # same weights, other network


def test_resnet18_table4_thinned_count_in_both_styles():
    sites = find_sites(create_model("resnet18", num_classes=100), (3, 32, 32))
    for style in THIN_STYLES:  # DeepReDuce Table 4: culled stem+S1, thinned S2-S4: 114,688 ReLUs
        plan = ReLUPlan.deepreduce(sites, cull=["stem", "s1"], thin=["s2", "s3", "s4"], thin_style=style)
        assert plan.count(sites) == 114_688


def test_a_stage_of_one_relu_blocks_thins_alike_in_both_styles():
    sites = find_sites(create_model("resnet9"), (3, 32, 32))  # s1: one single-conv block, one ReLU
    for stage in ("s1", "stem"):
        plans = [ReLUPlan.deepreduce(sites, thin=[stage], thin_style=style) for style in THIN_STYLES]
        assert plans[0].decisions == plans[1].decisions == {}  # half of one layer: nothing to drop


def test_unknown_style_is_one_line_error():
    sites = find_sites(create_model("resnet18"), (3, 32, 32))
    with pytest.raises(RelucutError, match="unknown thinning style 'middle'; use post_add or inner"):
        ReLUPlan.deepreduce(sites, thin=["s2"], thin_style="middle")


def test_build_plan_and_export_keep_the_style(tmp_path):
    spec = ModelSpec("resnet10", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 4})
    for style, kept, dropped in (("post_add", "s2_0_relu1", "s2_0_relu2"), ("inner", "s2_0_relu2", "s2_0_relu1")):
        plan = build_plan(spec, cull=["stem"], thin=["s2", "s3"], thin_style=style)
        assert plan.decision(dropped).action == "drop" and plan.decision(kept).action == "keep"
        torch.manual_seed(1)
        state = spec.build().state_dict()
        result = export_model(spec, plan, state, tmp_path / style, onnx=False)
        loaded = load_export(tmp_path / style)
        names = {s.name for s in find_sites(loaded, spec.input_size)}
        assert kept in names and dropped not in names
        assert count(loaded, spec.input_size).relus == result.recipe.after["relus"] == plan.count(
            find_sites(spec.build(), spec.input_size))
