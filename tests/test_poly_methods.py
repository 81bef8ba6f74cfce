"""``linearize = "identity" | "poly2"`` on the mask methods: a tiny SNL poly2 run to exactly its budget,
its export keeping the learned polynomials, the frontier entries, and bad input in one line."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from fixtures.finegrained import BASE, SPEC, TEACHER, TOTAL_RELUS, tiny_data

import relucut
from relucut import count, find_sites
from relucut.export import load_export
from relucut.frontier_search import FrontierConfig
from relucut.methods import frontier_entries, get_method
from relucut.methods.relupruner import ReLUPrunerConfig
from relucut.methods.senet import SENetConfig
from relucut.methods.snl import LINEARIZE, SNLConfig
from relucut.site_module import LINEARIZE as SITE_LINEARIZE

pytestmark = pytest.mark.usefixtures("one_thread")
BUDGET = 900


def test_every_mask_method_takes_linearize_and_its_poly2_entry():
    assert LINEARIZE == SITE_LINEARIZE  # the configs' spelling (no torch import) is the sites'
    for cls, entry in ((SNLConfig, "snl-poly2"), (SENetConfig, "senet-poly2"), (ReLUPrunerConfig, "relupruner-poly2")):
        assert cls().linearize == "identity"  # the default stays the identity
        assert entry in frontier_entries() and get_method(entry).config is cls
        template = FrontierConfig(budgets=[BUDGET], methods=[entry]).resolve(base_epochs=1).template(entry)
        assert template.linearize == "poly2"
    assert not hasattr(get_method("deepreduce").config(), "linearize")


def test_snl_poly2_holds_its_budget_exactly_and_exports_its_learned_polynomials(tmp_path):
    from relucut.train import train

    data = tiny_data()
    teacher = tmp_path / "teacher"
    train(TEACHER, teacher, data=data, progress=False)
    config = dataclasses.replace(SNLConfig.for_frontier(1, 1), budget=BUDGET, linearize="poly2")
    result = relucut.reduce(SPEC, config, data=data, teacher=teacher, train=BASE, out=tmp_path / "snl",
                            progress=False)
    assert result.method == "snl-poly2" and result.relus == BUDGET  # pixel top-k: exactly the budget
    model = load_export(result.export_dir)
    report = count(model, SPEC.input_size)
    stem = sum(s.numel for s in find_sites(SPEC.build(), SPEC.input_size) if s.stage == "stem")
    # SNL drops the stem ReLU: an identity there, a polynomial at every other position without a ReLU
    assert stem and report.relus == BUDGET and report.nonlinear_by_kind["poly2"] == TOTAL_RELUS - stem - BUDGET
    plan = result.plan
    polys = [d.poly for d in plan.decisions.values() if d.poly is not None]
    assert polys and plan.to_dict()["version"] == 3
    identity = torch.tensor([0.0, 1.0, 0.0]).view(3, 1)
    assert any(not torch.equal(p, identity.expand_as(p)) for p in polys)  # trained with the weights
    x = torch.randn(4, *SPEC.input_size)
    with torch.no_grad():
        expected = model(x).numpy()
    onnx_out = ort.InferenceSession(str(result.export_dir / "model.onnx")).run(None, {"input": x.numpy()})[0]
    assert np.abs(onnx_out - expected).max() <= 1e-4


def test_a_linearization_that_does_not_exist_is_one_line(tmp_path):
    proc = run_cli("snl", "resnet18", "--dataset", "digits", "--budget", "1k", "--linearize", "cubic",
                   "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert_one_line_error(proc, "unknown linearize 'cubic'", "identity or poly2")
    assert not (tmp_path / "out").exists()


def test_deepreduce_has_no_linearize_option(tmp_path):
    proc = run_cli("deepreduce", "resnet18", "--dataset", "digits", "--linearize", "poly2", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "No such option: --linearize" in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()
