"""relucut.reduce: one call per method, from the README's example, on digits."""

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

import relucut
from relucut.finegrained import SENetConfig, SNLConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_and_teacher():
    data = tiny_data()
    return data, trained_base(data)


def test_snl_in_one_call(data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    result = relucut.reduce(SPEC, SNLConfig(budget=800, search_epochs=1, finetune_epochs=1), data=data,
                            teacher=teacher, train=BASE, out=tmp_path, progress=False)
    assert result.report.relus == 800 == result.result["result"]["relus"]
    assert result.export_dir == tmp_path / "export" and (result.export_dir / "recipe.json").is_file()
    assert 0.0 <= result.accuracy <= 1.0
    assert sum(int(d.mask.sum()) for d in result.plan.decisions.values() if d.mask is not None) == 800
    assert result.model(torch.zeros(2, *SPEC.input_size)).shape == (2, 10)


def test_senet_in_one_call(data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    cfg = SENetConfig(budget=700, mask_epochs=1, finetune_epochs=1, milestones=[])
    result = relucut.reduce(SPEC, cfg, data=data, teacher=teacher, train=BASE, out=tmp_path, progress=False)
    assert result.report.relus == 700


def test_unknown_config_is_one_line(tmp_path):
    with pytest.raises(relucut.RelucutError, match="takes one of SNLConfig, SENetConfig"):
        relucut.reduce(SPEC, {"budget": 5}, data=tiny_data(), out=tmp_path)
