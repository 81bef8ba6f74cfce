"""scikit-learn's 8x8 handwritten digits: real images that ship with scikit-learn (no download)."""

from __future__ import annotations

import numpy as np
import torch

from relucut.data.splits import Split, carve
from relucut.errors import RelucutError

TEST_FRACTION = 0.2
TEST_SEED = 1234  # fixed: the test split never moves with the run's seed


def load_digits_splits() -> tuple[Split, Split, list[str]]:
    """Returns (train, test, class names); pixels 0..16 rescaled to uint8 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise RelucutError("the digits dataset needs scikit-learn; pip install 'relucut[data]'") from None
    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N,1,8,8
    full = Split(torch.from_numpy(pixels), torch.from_numpy(bunch.target.astype(np.int64)))
    train, test = carve(full, TEST_FRACTION, TEST_SEED)
    return train, test, [str(c) for c in range(10)]
