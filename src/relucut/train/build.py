"""Models from recipes: spec + plan -> module, and a trained run -> module with its weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from relucut.data import load_dataset
from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.plan import apply_plan
from relucut.train.checkpoint import find_checkpoint, read_checkpoint
from relucut.train.config import TrainConfig


def build_model(config: TrainConfig) -> nn.Module:
    """The config's model spec built, with its plan (if any) applied. Seed first for a fixed init."""
    spec = config.spec()
    model = spec.build()
    if config.plan is not None:
        model = apply_plan(model, config.plan, spec.input_size)
    return model


def load_data(config: TrainConfig) -> DataSplits:
    """The config's dataset with its validation carve (val_fraction, seed): load once, pass ``data=``."""
    return load_dataset(config.dataset, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
                        image_size=config.spec().image_size, val_from=config.val_from)


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu", *,
                          trusted_factories: Sequence[str] = ()) -> nn.Module:
    """Rebuilds a trained model (spec + plan from the run's config) and loads its weights.

    ``path`` is a run directory (its best.pt, else last.pt) or a checkpoint file. The model is
    returned in eval mode; ``model.relucut_config`` holds the run's TrainConfig and
    ``model.relucut_normalize`` the (mean, std) its inputs were normalized with. A config naming a
    ``package.module:factory`` is refused unless that factory is trusted (named in this process,
    in ``trusted_factories`` or in ``$RELUCUT_TRUSTED_FACTORIES``).
    """
    from relucut.models.registry import trust_factory

    trust_factory(*trusted_factories)
    file = find_checkpoint(path)
    ckpt = read_checkpoint(file)
    config = TrainConfig.from_dict(ckpt["config"])
    torch.manual_seed(config.seed)
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RelucutError(
            f"the weights in '{file}' do not fit the model rebuilt from its config ({first}); "
            "a model built outside the config (e.g. with learnable masks) must be rebuilt by its own code"
        ) from None
    model.relucut_config = config
    model.relucut_normalize = (tuple(ckpt.get("mean", ())), tuple(ckpt.get("std", ())))
    return model.to(device).eval()


def init_from(model: nn.Module, path: str | Path) -> int:
    """Copies the weights of the run dir or checkpoint ``path`` into ``model`` wherever a tensor's
    name and shape match (a culled or thinned network keeps every weight of its full-ReLU parent;
    a narrower one keeps none of the resized ones). Returns how many tensors were copied."""
    source = read_checkpoint(find_checkpoint(path))["model"]
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not any(v.dim() >= 2 for v in matching.values()):  # biases and BN counters alone are no start
        raise RelucutError(f"no weight of '{path}' fits this model (names or shapes differ); "
                           "start from a run of the same architecture, or drop init")
    model.load_state_dict(matching, strict=False)
    return len(matching)
