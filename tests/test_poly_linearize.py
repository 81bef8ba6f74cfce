"""Polynomial linearization (AutoReP): a dropped or masked site's other positions compute a per-channel
c2*x^2 + c1*x + c0. The plan records the coefficients (format version 3, older plans untouched),
counting reports those positions as their own kind beside exact ReLU counts, and the export keeps
them: the plan-applied network, load_export's rebuild and onnxruntime agree."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from relucut import PartialReLU, RelucutError, ReLUPlan, ReLUSite, count, find_sites
from relucut.export import export_model, load_export, planned_model
from relucut.finegrained.artifact import export as export_finegrained
from relucut.finegrained.artifact import plan_of
from relucut.finegrained.mask_site import POLY_X2_SCALE, LearnableMaskSite, install_mask_sites
from relucut.models.registry import ModelSpec
from relucut.site_module import LINEARIZE, poly2

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """conv(1->2, 3x3, 4x4 -> 2x2) -> ReLU -> conv(2->2, 1x1) -> ReLU -> flatten -> linear: sites of 8 positions."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 2, 3), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(2, 2, 1), nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu2(self.conv2(self.relu1(self.conv1(x)))), 1))


POLY = torch.tensor([[0.5, -0.25], [1.0, 2.0], [0.1, -0.3]])  # c0, c1, c2 for channels 0 and 1


def test_the_polynomial_is_c0_plus_c1_x_plus_c2_x_squared_per_channel():
    x = torch.tensor([[[[2.0]], [[-1.0]]]])  # one sample, channel 0 holds 2, channel 1 holds -1
    got = poly2(x, POLY).flatten().tolist()
    assert got == pytest.approx([0.5 + 1.0 * 2 + 0.1 * 4, -0.25 + 2.0 * -1 - 0.3 * 1])
    site = ReLUSite("mask", torch.tensor([[[True]], [[False]]]), POLY)
    assert site(x).flatten().tolist() == pytest.approx([2.0, -0.25 - 2.0 - 0.3])  # channel 0 a ReLU, 1 the polynomial
    assert ReLUSite("identity", poly=POLY)(x).flatten().tolist() == pytest.approx(got)
    with pytest.raises(ValueError, match="kept site has no polynomial"):
        ReLUSite("relu", poly=POLY)
    assert LINEARIZE == ("identity", "poly2")


def test_counts_by_kind_on_a_hand_checkable_network():
    model = Tiny()
    sites = find_sites(model, (1, 4, 4))
    names = [s.name for s in sites]
    assert [s.shape for s in sites] == [(2, 2, 2), (2, 2, 2)]
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[1, 0, 1] = True  # 3 ReLUs, 5 polynomial positions
    plan = ReLUPlan().set_mask(names[0], mask, POLY).drop(names[1], POLY)
    for report in (count(model, (1, 4, 4), plan), count(planned(model, plan), (1, 4, 4))):
        assert report.relus == 3 and report.comparisons == 3  # exact ReLU counts stay exact
        assert report.nonlinear_by_kind == {"relu": 3, "poly2": 5 + 8}
        assert report.smooth_by_kind == {"poly2": 13} and report.smooth_layers({"poly2"}) == 2
        assert report.comparison_layers == 1  # the all-polynomial site compares nothing
    identity = ReLUPlan().set_mask(names[0], mask).drop(names[1])
    assert count(model, (1, 4, 4), identity).nonlinear_by_kind == {"relu": 3}


def planned(model, plan):
    from relucut.plan import apply_plan

    return apply_plan(model, plan, (1, 4, 4)).eval()


def test_plans_with_polynomials_are_version_3_and_round_trip_exactly():
    coef = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))  # float32 values print exactly
    mask = torch.tensor([True, False]).view(2, 1, 1)
    plan = ReLUPlan().set_mask("a", mask, coef).drop("b", coef * 2).drop("c")
    data = plan.to_dict()
    assert data["version"] == 3 and set(data["sites"]["a"]["poly"]) == {"c0", "c1", "c2"}
    assert "poly" not in data["sites"]["c"]
    again = ReLUPlan.from_json(plan.to_json())
    assert again.decisions == plan.decisions and torch.equal(again.decisions["b"].poly, coef * 2)
    # without polynomials the lowest version that holds the plan: older relucut reads it
    assert ReLUPlan().set_mask("a", mask).drop("c").to_dict()["version"] == 1
    assert ReLUPlan().avgpool("p").to_dict()["version"] == 2


@pytest.mark.parametrize("bad, message", [
    (lambda d: d.update(version=2), "needs plan format version 3"),
    (lambda d: d["sites"]["b"]["poly"].pop("c2"), "c0, c1 and c2"),
    (lambda d: d["sites"]["b"]["poly"].update(c1=[1.0]), "of one length"),
    (lambda d: d["sites"]["b"]["poly"].update(c1=["x", 1.0]), "lists of numbers"),
    (lambda d: d["sites"]["b"].update(action="keep"), "'keep' site has no polynomial"),
])
def test_bad_polynomials_in_a_plan_are_one_line_errors(bad, message):
    data = ReLUPlan().drop("b", POLY).to_dict()
    bad(data)
    with pytest.raises(RelucutError, match=message) as err:
        ReLUPlan.from_dict(json.loads(json.dumps(data)))
    assert "\n" not in str(err.value)


def test_a_polynomial_must_have_one_column_per_channel_of_its_site():
    model = Tiny()
    sites = find_sites(model, (1, 4, 4))
    plan = ReLUPlan().drop(next(iter(sites)).name, torch.zeros(3, 5))
    with pytest.raises(RelucutError, match="has 5 channels, but the site has 2"):
        plan.validate(sites)


SPEC = ModelSpec("resnet20", 10, 3, 8, {"alpha": 0.25})


def _poly_plan(sites, seed: int = 0) -> ReLUPlan:
    """Sites in turn: pixel mask + polynomial, channel mask + polynomial, dropped to a polynomial, dropped, kept."""
    gen = torch.Generator().manual_seed(seed)
    plan = ReLUPlan()
    for i, s in enumerate(sites):
        coef = (torch.rand(3, s.shape[0], generator=gen) - 0.5) * 0.4 + torch.tensor([[0.0], [1.0], [0.0]])
        if i % 5 == 0:
            plan.set_mask(s.name, torch.rand(s.shape, generator=gen) > 0.6, coef)
        elif i % 5 == 1:
            plan.set_mask(s.name, (torch.rand(s.shape[0], generator=gen) > 0.5).view(-1, 1, 1), coef)
        elif i % 5 == 2:
            plan.drop(s.name, coef)
        elif i % 5 == 3:
            plan.drop(s.name)
    return plan


def _trained_like(plan):
    model = planned_model(SPEC, plan, seed=3)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def test_export_keeps_the_polynomials_torch_load_export_and_onnxruntime_agree(tmp_path):
    sites = find_sites(SPEC.build(), SPEC.input_size)
    plan = _poly_plan(sites)
    applied = _trained_like(plan)
    result = export_model(SPEC, plan, applied.state_dict(), tmp_path / "exp")
    loaded = load_export(tmp_path / "exp")
    x = torch.randn(5, *SPEC.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, rebuilt = applied(x), loaded(x)
    onnx_out = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx")).run(None, {"input": x.numpy()})[0]
    assert (expected - rebuilt).abs().max().item() <= 1e-4
    assert np.abs(onnx_out - expected.numpy()).max() <= 1e-4
    # the exported graph keeps each polynomial: gathered beside the ReLUs, or the site itself
    partial = [m for m in loaded.modules() if isinstance(m, PartialReLU)]
    kept = [m for m in loaded.modules() if type(m) is ReLUSite and m.poly is not None]
    assert partial and all(m.poly is not None for m in partial) and len(kept) == len(range(2, len(sites), 5))
    recipe = json.loads((tmp_path / "exp" / "recipe.json").read_text())
    report = count(applied, SPEC.input_size)
    assert recipe["plan"]["version"] == 3
    assert recipe["before"]["poly2"] == recipe["after"]["poly2"] == report.nonlinear_by_kind["poly2"] > 0
    assert recipe["relus"] == report.relus == count(loaded, SPEC.input_size).relus
    assert count(loaded, SPEC.input_size).nonlinear_by_kind == report.nonlinear_by_kind
    assert result.recipe.plan.decisions == plan.decisions


def test_a_checkpoint_whose_polynomial_differs_from_the_plan_is_refused(tmp_path):
    sites = find_sites(SPEC.build(), SPEC.input_size)
    plan = _poly_plan(sites)
    state = _trained_like(plan).state_dict()
    key = next(k for k in state if k.endswith(".poly"))
    state[key] = state[key] + 0.5
    with pytest.raises(RelucutError, match="polynomial at site .* differs from the plan's"):
        export_model(SPEC, plan, state, tmp_path / "exp", onnx=False)
    assert not (tmp_path / "exp").exists()


def test_learnable_sites_start_at_the_identity_scale_the_square_and_train_their_coefficients():
    site = LearnableMaskSite((2, 3, 3), "pixel", init=0.3, linearize="poly2")
    plain = LearnableMaskSite((2, 3, 3), "pixel", init=0.3)
    x = torch.randn(4, 2, 3, 3)
    assert torch.allclose(site(x), plain(x))  # at initialisation the polynomial is x
    assert torch.equal(site.coefficients(), torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    with torch.no_grad():
        site.poly_weight[2] = 1.0  # the trained square weight counts POLY_X2_SCALE (AutoReP's scale_x2)
    assert torch.allclose(site.coefficients()[2], torch.full((2,), POLY_X2_SCALE))
    relaxed = site.scores.detach()
    expected = poly2(x, site.coefficients()) + relaxed * (torch.relu(x) - poly2(x, site.coefficients()))
    assert torch.allclose(site(x), expected)  # m * relu(x) + (1 - m) * poly(x)
    site(x).square().sum().backward()
    assert site.poly_weight.grad is not None and bool((site.poly_weight.grad != 0).all())
    site.freeze(torch.rand(2, 3, 3) > 0.5)  # frozen: the ReLU at kept positions, the polynomial elsewhere
    where = torch.where(site.mask, torch.relu(x), poly2(x, site.coefficients()))
    assert torch.allclose(site(x), where)
    assert site.poly_elements((2, 3, 3)) == 18 - int(site.mask.sum())


def test_trained_mask_sites_export_their_learned_polynomials(tmp_path):
    spec = ModelSpec("resnet18", 10, 1, 8, {"base_width": 4})
    model = spec.build().eval()
    sites, masks = install_mask_sites(model, spec.input_size, linearize="poly2")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for site in masks.values():
            site.poly_weight.add_((torch.rand(site.poly_weight.shape, generator=gen) - 0.5) * 0.2)
            site.freeze(torch.rand(site.scores.shape, generator=gen) > 0.8)
    plan = plan_of(model)
    assert all(plan.decisions[n].poly is not None for n in masks)
    name = list(masks)[3]
    assert torch.equal(plan.decisions[name].poly, masks[name].coefficients().detach())
    summary = export_finegrained(tmp_path / "exp", model, spec)
    loaded = load_export(tmp_path / "exp")
    x = torch.randn(3, *spec.input_size)
    with torch.no_grad():
        assert (model(x) - loaded(x)).abs().max().item() <= 1e-4
    report = count(loaded, spec.input_size)
    assert summary["relus"] == report.relus == sum(int(m.mask.sum()) for m in masks.values())
    assert report.nonlinear_by_kind["poly2"] == sum(s.numel for s in sites) - report.relus


def test_a_checkpoint_whose_mask_differs_from_the_plan_is_refused(tmp_path):
    """Loading the weights must not write into the plan's own masks (it did: the check saw them equal)."""
    sites = find_sites(SPEC.build(), SPEC.input_size)
    plan = _poly_plan(sites)
    state = _trained_like(plan).state_dict()
    key = next(k for k in state if k.endswith(".mask") and state[k].numel() > 1)
    state[key] = ~state[key]
    before = {n: d.mask.clone() for n, d in plan.decisions.items() if d.mask is not None}
    with pytest.raises(RelucutError, match="mask at site .* differs from the plan's"):
        export_model(SPEC, plan, state, tmp_path / "exp", onnx=False)
    assert all(torch.equal(plan.decisions[n].mask, m) for n, m in before.items())
