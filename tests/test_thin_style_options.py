"""The thinning style reaches DeepReDuce's candidates and the command line."""

import json

from conftest import run_cli

from relucut.deepreduce.candidates import generate_candidates
from relucut.models.registry import ModelSpec
from relucut.sites import find_sites


def test_candidates_thin_the_style_they_are_given():
    spec = ModelSpec("resnet18", num_classes=10, in_chans=1, image_size=8, kwargs={"base_width": 2})
    sites = find_sites(spec.build(), spec.input_size)
    order = ["s1", "s2", "s3", "s4"]
    default = [c for c in generate_candidates(order, sites.stage_names) if c.step == "thinned"]
    inner = [c for c in generate_candidates(order, sites.stage_names, thin_style="inner") if c.step == "thinned"]
    assert [c.name for c in default] == [c.name.replace("_inner-thin", "") for c in inner]
    assert all(c.name.endswith("_inner-thin") for c in inner)  # their run folders differ
    for d, i in zip(default, inner):
        dropped_d, dropped_i = set(d.plan_for(sites).decisions), set(i.plan_for(sites).decisions)
        thinned = {s for s in dropped_d if not any(s.startswith(c) for c in d.culled)}
        assert thinned and all(s.endswith("relu2") for s in thinned)  # post-add ReLUs go by default
        assert dropped_d != dropped_i


def test_count_takes_the_thinning_style():
    args = ["count", "resnet18", "--dataset", "cifar10", "--thin", "s2", "--json"]
    post_add = json.loads(run_cli(*args, check=True).stdout)
    inner = json.loads(run_cli(*args, "--thin-style", "inner", check=True).stdout)
    assert post_add["relus"] == inner["relus"]
    def kept(doc):
        return {s["name"] for s in doc["sites"] if s["relus"] > 0}

    assert kept(post_add) - kept(inner) == {"s2_0_relu1", "s2_1_relu1"}  # inner ReLUs stay by default
