"""Capacity–criticality designs (exact ReLUs <= budget, the regime switch) and the trained pipeline."""

import dataclasses
import json

import pytest

from conftest import assert_one_line_error, run_cli
from relucut import RelucutError, count, find_sites
from relucut.deepreshape.capacity import design_for_budget
from relucut.deepreshape.pipeline import PipelineSettings, designs, summary_rows, train_designs
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan

ORDER = (2, 1, 3, 0)  # S3 > S2 > S4 > S1
SMALL = (3, 8, 8)  # hrn_5x5x3x has 1,340 ReLUs per unit of m here (343,040 at m=16, 32x32)


def relus_of(design, m, input_size=SMALL):
    spec = ModelSpec(design.model, 10, input_size[0], input_size[1], {"base_width": m, "blocks": list(design.blocks)})
    net = spec.build()
    plan = ReLUPlan.deepreduce(find_sites(net, input_size), cull=design.culled, thin=design.thinned)
    return count(net, input_size, plan=plan).relus


@pytest.mark.parametrize("budget", [700, 6_000])
def test_design_fits_the_budget_and_uses_the_widest_m(budget):
    d = design_for_budget(budget, (5, 5, 3), ORDER, input_size=SMALL, min_width=4)
    assert d.relus == relus_of(d, d.base_width) <= budget
    assert relus_of(d, d.base_width + 1) > budget  # one more channel per unit width would not fit
    spec, plan = d.spec(10, SMALL), d.plan(10, SMALL)
    assert count(spec.build(), SMALL, plan=plan).relus == d.relus


def test_high_budget_widens_the_equalized_network():
    d = design_for_budget(6_000, (5, 5, 3), ORDER, input_size=SMALL, min_width=4)
    assert (d.regime, d.model, d.culled, d.thinned) == ("widen", "hrn_5x5x3x", (), ())
    assert d.base_width == 6_000 // 1_340 == 4


def test_low_budget_culls_the_least_critical_stage_of_a_least_critical_heavy_network():
    d = design_for_budget(2_000, (5, 5, 3), ORDER, input_size=SMALL, min_width=4)
    assert d.regime == "cull" and d.model == "hrn_2x5x2x"
    assert "s1" in d.culled and "stem" in d.culled and "s3" not in d.culled  # never the most critical
    assert d.base_width >= 4
    assert d.distribution["s1"] == 0.0


def test_lower_budgets_cull_more():
    low, high = (design_for_budget(b, (5, 5, 3), ORDER, input_size=SMALL, min_width=4) for b in (300, 2_000))
    assert len(low.culled) + len(low.thinned) > len(high.culled) + len(high.thinned)


def test_budget_below_the_smallest_design_is_an_error():
    with pytest.raises(RelucutError, match="below the smallest design"):
        design_for_budget(10, (5, 5, 3), ORDER, input_size=SMALL)
    with pytest.raises(RelucutError, match="rank each of the 4 stages"):
        design_for_budget(1_000, (5, 5, 3), (2, 1, 3), input_size=SMALL)


def test_pipeline_trains_both_networks_per_budget_and_resumes(tmp_path):
    from relucut.train import TrainConfig

    settings = PipelineSettings(model="hrn_5x5x3x", budgets=[300], order=list(ORDER), blocks=[1, 1, 1, 1],
                                min_width=2, input_size=(1, 8, 8), num_classes=10)
    config = TrainConfig(dataset="digits", epochs=1, batch_size=64, limit_train=256, schedule="constant", lr=0.05)
    rows = train_designs(settings, config, tmp_path, progress=False)
    assert [(r["budget"], r["role"]) for r in rows] == [(300, "hybrenet"), (300, "baseline")]
    for r in rows:
        assert r["relus"] <= r["budget"] and 0.0 <= r["test_acc"] <= 1.0 and r["epochs"] == 1
        assert 0.0 <= r["val_acc"] <= 1.0 and "best_val_acc" not in r  # the results vocabulary
        saved = json.loads((tmp_path / f"{r['budget']}_{r['role']}" / "config.json").read_text())
        assert saved["model"]["name"] == r["model"] and saved["model"]["kwargs"]["base_width"] == r["base_width"]
    assert json.loads((tmp_path / "result.json").read_text()) == rows
    before = (tmp_path / "300_hybrenet" / "final.json").stat().st_mtime_ns
    again = train_designs(settings, config, tmp_path, progress=False)
    assert again == rows and (tmp_path / "300_hybrenet" / "final.json").stat().st_mtime_ns == before
    with pytest.raises(RelucutError, match="different train.epochs; .* pass a new --out"):  # nor another recipe
        train_designs(settings, dataclasses.replace(config, epochs=2), tmp_path, progress=False)
    with pytest.raises(RelucutError, match="different settings.budgets"):  # deepreshape.json is checked
        train_designs(dataclasses.replace(settings, budgets=[400]), config, tmp_path, progress=False)
    assert train_designs(settings, dataclasses.replace(config, device="cpu"), tmp_path, progress=False) == rows
    assert len(summary_rows(rows)) == 2


def test_fine_grained_low_budgets_are_masked_to_exactly_the_budget(tmp_path):
    from relucut.finegrained import load_export
    from relucut.methods.snl import SNLConfig
    from relucut.train import TrainConfig

    settings = PipelineSettings(model="hrn_5x5x3x", budgets=[300], order=list(ORDER), blocks=[1, 1, 1, 1],
                                min_width=2, input_size=(1, 8, 8), num_classes=10, fine_grained=True)
    # SNL's base must learn (a teacher at chance is refused): Adam, 512 images, 2 epochs
    config = TrainConfig(dataset="digits", epochs=2, batch_size=32, limit_train=512, schedule="constant",
                         optimizer="adam", lr=0.01)
    coarse = designs(dataclasses.replace(settings, fine_grained=False))[0]
    assert {d.regime for d in coarse.values()} == {"cull"}  # this budget is in the low regime
    def snl(budget, epochs):
        return SNLConfig(budget=budget, search_epochs=epochs, finetune_epochs=epochs)

    rows = train_designs(settings, config, tmp_path, progress=False, snl_config=snl)
    for r in rows:
        design = coarse[r["role"]]
        assert r["method"] == "snl-pixel" and r["relus"] == 300 and (r["culled"], r["thinned"]) == ([], [])
        assert (r["model"], r["base_width"]) == (design.model, design.base_width)  # the same network, masked
        assert r["macs"] == design.macs  # masks, like culling, leave the convs as they are
        exported = load_export(tmp_path / f"300_{r['role']}_snl" / "export")
        assert count(exported, (1, 8, 8)).relus == 300
        assert 0.0 <= r["test_acc"] <= 1.0 and sum(r["distribution"].values()) == pytest.approx(100, abs=0.1)
        assert 0.0 <= r["val_acc"] <= 1.0
    assert [c[2].split()[-1] for c in summary_rows(rows)] == ["snl-pixel", "snl-pixel"]
    assert train_designs(settings, config, tmp_path, progress=False, snl_config=snl) == rows  # a rerun reuses the runs


def test_baseline_keeps_resnet18_ratios():
    settings = PipelineSettings(model="hrn_7x5x2x", budgets=[300, 6_000], order=list(ORDER),
                                min_width=4, input_size=SMALL)
    for per in designs(settings):
        assert per["baseline"].model == "hrn_2x2x2x"
        assert per["hybrenet"].relus <= per["hybrenet"].budget


def test_cli_deepreshape_trains_and_errors(tmp_path):
    proc = run_cli("deepreshape", "hrn_5x5x3x", "--budget", "300", "--dataset", "digits", "--blocks", "1,1,1,1",
                   "--min-width", "2", "--epochs", "1", "--limit-train", "128", "--out", tmp_path, "--json",
                   check=True)
    out = json.loads(proc.stdout)
    assert [r["role"] for r in out["results"]] == ["hybrenet", "baseline"]
    assert all(r["relus"] <= 300 and r["test_acc"] is not None for r in out["results"])
    assert json.loads((tmp_path / "result.json").read_text()) == out["results"]
    assert (tmp_path / "deepreshape.json").is_file() and not (tmp_path / "results.json").exists()
    assert_one_line_error(run_cli("deepreshape", "resnet18", "--budget", "12k", "--design-only"), "hrn_AxBxCx")
