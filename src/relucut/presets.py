"""Dataset presets: the input shape and class count each dataset implies."""

from __future__ import annotations

from dataclasses import dataclass

from relucut.errors import RelucutError


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    in_chans: int
    image_size: int
    num_classes: int

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)


PRESETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in (
        DatasetPreset("cifar10", 3, 32, 10),
        DatasetPreset("cifar100", 3, 32, 100),
        DatasetPreset("tinyimagenet", 3, 64, 200),
        DatasetPreset("imagenet", 3, 224, 1000),
        # scikit-learn's 8x8 grey digits: the embedded default dataset.
        DatasetPreset("digits", 1, 8, 10),
    )
}


def get_preset(name: str) -> DatasetPreset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise RelucutError(
            f"unknown dataset '{name}'; choose one of: {', '.join(PRESETS)}"
        ) from None
