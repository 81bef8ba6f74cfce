"""ReLU plans: JSON round trips, plans from masks and from models, validation errors."""

import json

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from relucut import RelucutError, ReLUPlan, apply_plan_, count, create_model, find_sites

SIZE = (3, 8, 8)


@pytest.fixture(scope="module")
def sites():
    return find_sites(create_model("resnet10", alpha=0.125), SIZE)


def _mixed_plan(sites):
    names = [s.name for s in sites]
    pixel = torch.rand(sites[names[1]].shape) > 0.5
    channel = (torch.rand(sites[names[2]].shape[0]) > 0.5).view(-1, 1, 1)
    plan = ReLUPlan(meta={"method": "test", "budget": 123}).drop(names[0]).keep(names[3])
    return plan.set_mask(names[1], pixel).set_mask(names[2], channel)


def test_plan_json_round_trip_is_identity(sites, tmp_path):
    plan = _mixed_plan(sites)
    again = ReLUPlan.from_json(plan.to_json())
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    plan.save(tmp_path / "plan.json")
    assert ReLUPlan.load(tmp_path / "plan.json") == plan
    assert again.count(sites) == plan.count(sites)


def test_channel_mask_counts_its_channels_times_pixels(sites):
    name = sites.sites[2].name
    c, h, w = sites[name].shape
    channel = torch.zeros(c, 1, 1, dtype=torch.bool)
    channel[:3] = True
    plan = ReLUPlan().set_mask(name, channel)
    assert plan.count(sites) == sum(s.numel for s in sites) - c * h * w + 3 * h * w


def test_from_masks_names_all_ones_keep_and_all_zeros_drop(sites):
    a, b, c = (s.name for s in sites.sites[:3])
    mixed = torch.zeros(sites[c].shape, dtype=torch.bool)
    mixed[0, 0, 0] = True
    plan = ReLUPlan.from_masks({a: torch.ones(sites[a].shape), b: torch.zeros(sites[b].shape), c: mixed})
    assert [plan.decision(n).action for n in (a, b, c)] == ["keep", "drop", "mask"]
    assert plan.count(sites) == sum(s.numel for s in sites) - sites[b].numel - sites[c].numel + 1


def test_from_model_reads_the_plan_back(sites):
    model = create_model("resnet10", alpha=0.125)
    plan = _mixed_plan(sites)
    apply_plan_(model, plan, SIZE)
    back = ReLUPlan.from_model(model)
    assert {n: d for n, d in back.decisions.items()} == {
        n: d for n, d in plan.decisions.items() if d.action != "keep"
    }
    assert count(model, SIZE).relus == plan.count(sites)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(format="x"), "not a relucut plan"),
    (lambda d: d["sites"]["s1_0_relu1"].update(bits="AA"), "corrupt plan"),
    (lambda d: d["sites"]["s1_0_relu1"].update(ones=1), "corrupt plan"),
    (lambda d: d["sites"]["s1_0_relu1"].update(action="half"), "unknown site action"),
    (lambda d: d["sites"]["s1_0_relu1"].pop("shape"), "corrupt plan"),
])
def test_corrupt_plan_dicts_raise_clear_errors(sites, mutate, needle):
    name = "s1_0_relu1"
    data = ReLUPlan().set_mask(name, torch.rand(sites[name].shape) > 0.5).to_dict()
    mutate(data)
    with pytest.raises(RelucutError, match=needle):
        ReLUPlan.from_dict(json.loads(json.dumps(data)))


def test_validation_names_unknown_sites_and_bad_mask_shapes(sites):
    with pytest.raises(RelucutError, match="no ReLU site 'nope'"):
        ReLUPlan().drop("nope").validate(sites)
    with pytest.raises(RelucutError, match="mask for site 's1_0_relu1' has shape"):
        ReLUPlan().set_mask("s1_0_relu1", torch.ones(3, 2, 2, dtype=torch.bool)).validate(sites)


def test_cli_count_rejects_corrupt_plan_file(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text('{"format": "relucut.plan", "version": 1, "sites": {')
    proc = run_cli("count", "resnet6", "--alpha", "0.125", "--plan", bad)
    assert_one_line_error(proc, "corrupt plan JSON")
