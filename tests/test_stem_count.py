"""ReLU counts with and without the stem ReLU: the SNL authors' ResNet18 has none, relucut's has one."""

import json

import pytest
from conftest import run_cli
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

from relucut import ReLUPlan, count, find_sites
from relucut.finegrained.pipeline import run_snl
from relucut.methods.snl import SNLConfig
from relucut.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet18_counts_both_ways():
    report = count(create_model("resnet18"), (3, 32, 32))
    assert report.relus == 557_056  # relucut's ResNet18: a stem ReLU of 64 x 32 x 32
    assert report.relus_without_stem == 491_520  # the SNL authors' network, as published
    assert report.to_dict()["relus_without_stem"] == 491_520


def test_a_plan_that_drops_the_stem_makes_both_counts_equal():
    model = create_model("resnet18")
    sites = find_sites(model, (3, 32, 32))
    report = count(model, (3, 32, 32), plan=ReLUPlan.deepreduce(sites, cull=["stem", "s1"]))
    assert report.relus == report.relus_without_stem == 557_056 - 65_536 - 262_144


def test_cli_count_json_reports_both():
    counted = json.loads(run_cli("count", "resnet18", "--json", check=True).stdout)
    assert (counted["relus"], counted["relus_without_stem"]) == (557_056, 491_520)


def test_snl_result_json_and_export_report_both(tmp_path):
    data = tiny_data()
    base = trained_base(data)
    cfg = SNLConfig(budget=500, search_epochs=1, finetune_epochs=1, milestones=[])
    result = run_snl(SPEC, data, tmp_path / "snl", cfg, base=BASE, teacher=base, progress=False)
    written = json.loads((tmp_path / "snl" / "result.json").read_text())
    counted = json.loads(run_cli("count", tmp_path / "snl" / "export", "--json", check=True).stdout)
    stem = sum(s["relus"] for s in counted["sites"] if s["stage"] == "stem")
    assert written["result"]["relus"] == counted["relus"] == result["result"]["relus"]
    assert written["result"]["relus_without_stem"] == counted["relus_without_stem"] == counted["relus"] - stem
    assert written["baseline"]["relus"] - written["baseline"]["relus_without_stem"] == 256  # 4 x 8 x 8 stem
