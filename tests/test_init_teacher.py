"""TrainConfig.init: a reduced network starts from its full-ReLU parent's weights (where shapes match)."""

import dataclasses

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, tiny_data

from relucut.errors import RelucutError
from relucut.plan import ReLUPlan
from relucut.sites import find_sites
from relucut.train import build_model, train
from relucut.train.build import init_from

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "teacher"
    train(BASE, run, data=tiny_data(), progress=False)
    return run


def _culled():
    plan = ReLUPlan.deepreduce(find_sites(SPEC.build(), SPEC.input_size), cull=["stem", "s1"], thin=["s2"])
    return dataclasses.replace(BASE, plan=plan.to_dict())


def test_a_culled_network_takes_every_weight_of_its_parent(teacher_run):
    from relucut.train import load_checkpoint_model

    parent = load_checkpoint_model(teacher_run).state_dict()
    child = build_model(_culled())
    copied = init_from(child, teacher_run)
    assert copied == len(parent)
    for name, tensor in child.state_dict().items():
        assert torch.equal(tensor, parent[name]), name


def test_training_with_init_starts_from_the_parent(teacher_run, tmp_path):
    from relucut.train import load_checkpoint_model

    parent = load_checkpoint_model(teacher_run).state_dict()
    cfg = dataclasses.replace(_culled(), init=str(teacher_run), lr=1e-9, momentum=0.0, weight_decay=0.0,
                              schedule="constant")
    train(cfg, tmp_path / "child", data=tiny_data(), progress=False)
    child = load_checkpoint_model(tmp_path / "child").state_dict()
    conv = next(k for k in child if k.endswith("conv1.weight"))
    assert torch.allclose(child[conv], parent[conv], atol=1e-6)  # lr ~ 0: still the parent's weights
    scratch = build_model(_culled()).state_dict()
    assert not torch.allclose(scratch[conv], parent[conv])


def test_a_model_with_no_matching_weight_is_refused(teacher_run):
    other = dataclasses.replace(BASE, model={**SPEC.to_dict(), "kwargs": {"base_width": 3}})
    with pytest.raises(RelucutError, match="no weight of"):
        init_from(build_model(other), teacher_run)
