"""relucut.reduce: one call per method, from the README's example, on digits."""

import json

import pytest
import torch
from fixtures.finegrained import BASE, SPEC, TEACHER, tiny_data, trained_base

import relucut
from relucut import SENetConfig, SNLConfig
from relucut.methods import methods

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
    configs = ", ".join(m.config.__name__ for m in methods())  # every registered method's config
    with pytest.raises(relucut.RelucutError, match=f"relucut.reduce takes one of {configs}, got dict$"):
        relucut.reduce(SPEC, {"budget": 5}, data=tiny_data(), out=tmp_path)


def _saved_teacher(data, tmp_path):
    """A relucut train run dir: DeepReDuce and DeepReShape take their teacher by path."""
    from relucut.train import train

    run = tmp_path / "teacher"
    train(TEACHER, run, data=data, progress=False)  # one that learned: KD refuses one at chance
    return run


def test_deepreduce_in_one_call(data_and_teacher, tmp_path):
    data, _ = data_and_teacher
    teacher = _saved_teacher(data, tmp_path)
    cfg = relucut.DeepReDuceConfig(budget=600, criticality_without_kd=False, one_block=False)
    result = relucut.reduce(SPEC, cfg, data=data, teacher=teacher, train=BASE, out=tmp_path / "dr", progress=False)
    assert result.report.relus <= 600 and result.report.relus == result.result["result"]["relus"]
    rows = [r for r in json.loads((tmp_path / "dr" / "frontier.json").read_text())["candidates"]
            if r["relus"] <= 600]
    assert result.result["result"]["val_acc"] == max(r["val_acc"] for r in rows)  # the pick, on validation
    assert (result.export_dir / "model.onnx").is_file()


def test_deepreshape_in_one_call(data_and_teacher, tmp_path):
    data, _ = data_and_teacher
    teacher = _saved_teacher(data, tmp_path)
    cfg = relucut.DeepReShapeConfig(budget=900, min_width=2)
    result = relucut.reduce(SPEC, cfg, data=data, teacher=teacher, train=BASE, out=tmp_path / "rs", progress=False)
    assert result.report.relus <= 900 and result.result["network"].startswith("hrn_")
    assert result.model(torch.zeros(2, *SPEC.input_size)).shape == (2, 10)
    assert result.accuracy is not None
