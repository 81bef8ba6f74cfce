"""Users' own networks: every non-linearity counted by kind, ReLU6 and max-pool plan sites,
class counts, eval-mode tracing, and squeeze-excite gates kept out of the stages."""

import json
import math

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from torch import nn

from relucut import RelucutError, ReLUPlan, apply_plan, apply_plan_, count, find_sites
from relucut.export import export_model, load_export
from relucut.models.registry import ModelSpec, create_model
from relucut.pi import Workload, estimate, load_profile
from relucut.site_module import AvgPoolSite, ReLU6Site
from fixtures.user_nets import FunctionalNet, UserNet, global_bn_net, user_net

SIZE = (3, 32, 32)
USER_NET = "fixtures.user_nets:user_net"

pytestmark = pytest.mark.usefixtures("one_thread")

# kind of each module type, as a user would tally them by hand
HOOKED = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.MaxPool2d: "maxpool"}


def hook_counts(model: nn.Module, size=SIZE) -> dict[str, int]:
    """Per kind, from forward hooks: output elements, and (k*k - 1) per output for max-pools."""
    counts: dict[str, int] = {}

    def hook(module, _inputs, output):
        kind = HOOKED[type(module)]
        n = output[0].numel()
        if kind == "maxpool":
            k = module.kernel_size
            n *= (k * k if isinstance(k, int) else math.prod(k)) - 1
        counts[kind] = counts.get(kind, 0) + n

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) in HOOKED]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    for h in handles:
        h.remove()
    return counts


def test_counts_by_kind_equal_a_forward_hook_count():
    model = user_net()
    report = count(model, SIZE)
    # hooks see modules; the SE gate's product x * sigmoid(s) multiplies two activations (32x16x16)
    assert report.nonlinear_by_kind == {**hook_counts(model), "mul": 32 * 16 * 16}
    by_kind = report.nonlinear_by_kind
    assert report.relus == by_kind["relu"] + by_kind["relu6"]
    # ReLU 1, ReLU6 2 per element, max-pool 8 per output of its 3x3 window; GELU/sigmoid are not comparisons
    assert report.comparisons == by_kind["relu"] + 2 * by_kind["relu6"] + by_kind["maxpool"]
    assert report.smooth_by_kind == {"sigmoid": 32, "mul": 32 * 16 * 16, "gelu": 64 * 8 * 8}


def test_functional_forms_are_counted():
    report = count(FunctionalNet(), (3, 8, 8))
    assert report.nonlinear_by_kind == {
        "relu": 0, "relu6": 8 * 8 * 8, "maxpool": 8 * 4 * 4 * 3, "gelu": 128, "hardtanh": 128,
        "sigmoid": 2 * 128, "leaky_relu": 128,
    }
    assert report.comparisons_by_kind == {"relu6": 1024, "maxpool": 384, "hardtanh": 256, "leaky_relu": 128}
    assert [(s.site.name, s.site.kind, s.site.op) for s in report.sites] == [("relu6", "relu6", "call_function")]
    assert [p.site.name for p in report.pools] == ["max_pool2d"]


def test_cli_warns_in_one_line_naming_gelu_and_prints_kinds_in_json():
    proc = run_cli("count", USER_NET, "--json", check=True)
    warning = proc.stderr.strip().splitlines()
    assert len(warning) == 1 and "GELU" in warning[0] and "Sigmoid" in warning[0]
    data = json.loads(proc.stdout)
    assert data["nonlinear_by_kind"]["gelu"] == 4096 and data["nonlinear_by_kind"]["maxpool"] == 32768
    assert data["comparisons"] == data["relus"] + data["nonlinear_by_kind"]["relu6"] + 32768
    assert data["pi_estimate"]["unpriced_kinds"] == ["sigmoid", "mul", "gelu"]
    assert data["pi_estimate"]["unpriced"] == {"sigmoid": 32, "mul": 8192, "gelu": 4096}
    assert data["pi_estimate"]["lower_bound"] is True and "lower bound" in warning[0]
    assert [p["name"] for p in data["pools"]] == ["pool"]
    assert {n["kind"] for n in data["nonlinear"]} == {"gelu", "sigmoid", "mul"}
    assert run_cli("count", "resnet20", "--json", check=True).stderr.strip() == ""


def test_class_count_is_the_datasets():
    data = json.loads(run_cli("count", USER_NET, "--dataset", "cifar100", "--json", check=True).stdout)
    assert data["macs_by_module"]["head"] == 64 * 100
    grey = ModelSpec(USER_NET, 10, 1, 8).build()  # digits: 1 channel, passed as in_chans
    assert grey.stem[0].in_channels == 1
    spec = ModelSpec("fixtures.user_nets:kwargs_user_net", 100, 3, 32)  # num_classes through **kwargs
    assert spec.build()(torch.zeros(1, *SIZE)).shape == (1, 100)


def test_factory_without_num_classes_gets_its_head_resized_or_a_one_line_refusal():
    model = ModelSpec("fixtures.user_nets:imagenet_user_net", 10, 3, 32).build()
    assert model.head.out_features == 10 and model.eval()(torch.zeros(1, *SIZE)).shape == (1, 10)
    assert create_model("fixtures.user_nets:imagenet_user_net", num_classes=7).head.out_features == 7
    with pytest.raises(RelucutError, match="builds 1000 classes, not 10"):
        ModelSpec("fixtures.user_nets:conv_head_net", 10, 3, 32).build()
    assert_one_line_error(run_cli("count", "fixtures.user_nets:conv_head_net"), "builds 1000 classes")
    # no in_chans: its first conv reads digits' one channel (tests/test_user_networks_cli.py)
    assert run_cli("count", "fixtures.user_nets:functional_net", "--dataset", "digits").returncode == 0


def _bn_stats_(model: nn.Module) -> nn.Module:
    """Random running statistics, so that folding batch-norm in the export is really tested."""
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def test_maxpool_to_avgpool_plan_changes_the_count_exactly_and_exports(tmp_path):
    spec = ModelSpec(USER_NET, 10, 3, 32)
    base = _bn_stats_(spec.build()).eval()
    sites = find_sites(base, SIZE)
    plan = ReLUPlan().replace_maxpools(sites)
    assert plan.decisions == ReLUPlan().avgpool("pool").decisions
    full, planned = count(base, SIZE), count(base, SIZE, plan=plan)
    assert full.comparisons - planned.comparisons == 16 * 16 * 16 * 8
    assert planned.relus == full.relus and "maxpool" not in planned.nonlinear_by_kind

    applied = apply_plan(base, plan).eval()
    assert type(applied.pool) is AvgPoolSite and isinstance(applied.pool, nn.AvgPool2d)
    assert count(applied, SIZE).comparisons == planned.comparisons
    assert ReLUPlan.from_model(applied) == plan
    data = plan.to_dict()
    assert data["version"] == 2 and ReLUPlan.from_dict(data) == plan

    export_model(spec, plan, base.state_dict(), tmp_path / "export")
    net = load_export(tmp_path / "export")
    assert any(isinstance(m, nn.AvgPool2d) for m in net.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        assert (net(x) - applied(x)).abs().max() < 1e-4
    assert count(net, SIZE).comparisons == planned.comparisons


def test_relu6_sites_drop_and_mask_and_functional_pools_swap():
    model = user_net().eval()
    dropped = apply_plan_(user_net().eval(), ReLUPlan().drop("stem_act"), SIZE)
    assert count(dropped, SIZE).nonlinear_by_kind.get("relu6", 0) == 0
    assert count(model, SIZE).relus - count(dropped, SIZE).relus == 16 * 32 * 32

    net = FunctionalNet().eval()
    mask = torch.rand(8, 8, 8) > 0.5
    plan = ReLUPlan().set_mask("relu6", mask).avgpool("max_pool2d")
    applied = apply_plan(net, plan).eval()
    assert isinstance(applied.relu6, ReLU6Site) and isinstance(applied.max_pool2d, AvgPoolSite)
    assert count(applied, (3, 8, 8)).nonlinear_by_kind["relu6"] == int(mask.sum())
    x = torch.randn(2, 3, 8, 8)
    h = net.c1(x)
    h = torch.where(mask, torch.nn.functional.relu6(h), h)
    h = torch.nn.functional.gelu(net.c2(torch.nn.functional.avg_pool2d(h, 2)))
    h = torch.nn.functional.leaky_relu(torch.nn.functional.hardtanh(h) + 2 * torch.sigmoid(h), 0.1)
    with torch.no_grad():
        torch.testing.assert_close(applied(x), net.fc(h.mean((2, 3))))


def test_plan_actions_must_fit_the_site_kind():
    sites = find_sites(user_net(), SIZE)
    with pytest.raises(RelucutError, match="max-pool site"):
        ReLUPlan().drop("pool").validate(sites)
    with pytest.raises(RelucutError, match="relu6 site"):
        ReLUPlan().avgpool("stem_act").validate(sites)
    with pytest.raises(RelucutError, match="version 2"):
        ReLUPlan.from_dict({"format": "relucut.plan", "version": 1, "sites": {"pool": {"action": "avgpool"}}})
    v1 = {"format": "relucut.plan", "version": 1, "sites": {"stem_act": {"action": "drop"}}, "meta": {}}
    assert ReLUPlan.from_dict(v1).to_dict() == v1  # version 1 plans load, and stay version 1


def test_squeeze_excite_sites_are_gates_not_their_own_stage():
    sites = find_sites(user_net(), SIZE)
    assert sites.stage_names == ("s1", "s2", "s2.gate", "s3")
    assert [s.name for s in sites.in_stage("s2")] == ["act1", "act2"]  # one stage around the SE block
    gate = sites["se_relu"]
    assert gate.gate and gate.stage == "s2.gate" and not any(s.gate for s in sites.in_stage("s2"))
    culled = ReLUPlan.deepreduce(sites, cull=["s2"])
    assert "se_relu" not in culled.decisions and {"act1", "act2"} <= set(culled.decisions)
    assert "se_relu" in ReLUPlan.deepreduce(sites, cull=["s2.gate"]).decisions


def test_tracing_and_shapes_run_in_eval_mode_and_restore_modes():
    model = global_bn_net().train()
    model.fc.eval()  # mixed modes survive counting
    assert count(model, (3, 8, 8)).relus == 8  # batch-norm on a 1x1 map: fails in training mode
    assert model.training and model.norm.training and not model.fc.training


def test_a_failing_forward_is_one_line_without_torchs_traceback():
    proc = run_cli("count", "fixtures.user_nets:big_kernel_net", "--dataset", "digits")
    assert_one_line_error(proc, "forward pass at input size (1, 8, 8) failed", "--dataset")
    assert "ShapeProp" not in proc.stderr


def test_profiles_price_smooth_kinds_from_their_table(tmp_path):
    report = count(user_net(), SIZE)
    plain = estimate(report, "delphi")
    assert plain.unpriced_kinds == ["sigmoid", "mul", "gelu"] and plain.relus == report.comparisons
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"base": "delphi", "kind_relu_equivalents": {"gelu": 10, "sigmoid": 4, "mul": 2}}))
    priced = estimate(report, profile_file=str(path))
    assert priced.unpriced_kinds == [] and priced.relus == report.comparisons + 10 * 4096 + 4 * 32 + 2 * 8192
    assert priced.relu_layers == plain.relu_layers + 3 and priced.online_s > plain.online_s
    path.write_text(json.dumps({"kind_relu_equivalents": {"swish": 1}}))
    with pytest.raises(RelucutError, match="unknown kind 'swish'"):
        load_profile(path)
    assert estimate(Workload(100, 1, 0), "delphi").unpriced_kinds == []


def test_user_net_fixture_has_what_the_tests_rely_on():
    model = UserNet()
    kinds = {type(m) for m in model.modules()}
    assert {nn.ReLU6, nn.MaxPool2d, nn.GELU, nn.Sigmoid} <= kinds


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x):  # x: (N, 5 tokens, 8)
        q, k, v = self.qkv(x).view(x.shape[0], 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_fused_attention_counts_its_softmax():
    report = count(_Attention(), (5, 8))
    # 2 heads, 5 queries x 5 keys; Q.K^T and A.V: 2 x 5 x 5 x (4 + 4) MACs, in macs too
    assert report.smooth_by_kind == {"softmax": 2 * 5 * 5, "matmul": 2 * 5 * 5 * 8}
    assert report.macs == 5 * 8 * 24 + 400 and report.weight_macs == 5 * 8 * 24
