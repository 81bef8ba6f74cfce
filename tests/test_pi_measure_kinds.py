"""A transformer-style block under SPU (Cheetah): its GELU, softmax, LayerNorm and products of two
activations run securely, equal PyTorch, and the spu-cheetah profile's kind terms price them."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from relucut.pi import Workload, estimate, get_profile
from relucut.pi.measure import measure_many

pytestmark = pytest.mark.spu  # real 2PC under .venv-spu (`make spu-env`)

TOKENS, WIDTH = 8, 16
# bytes: SPU draws these kinds' correlations from pools it refills every few runs (about 1 MB each), so one
# run's bytes move around the amortised figure the profile carries (bench/results/spu_kinds.md)
BYTES_TOLERANCE = 0.5


class Block(nn.Module):
    """LN, single-head attention (Q.K^T, softmax, A.V), a GELU MLP with a sigmoid gate."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.up, self.act, self.gate = nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(WIDTH, 4 * WIDTH)
        self.down = nn.Linear(4 * WIDTH, WIDTH)

    def forward(self, x):
        h = self.norm(x)
        x = x + torch.softmax(self.q(h) @ self.k(h).transpose(-2, -1) / 4.0, dim=-1) @ self.v(h)
        return x + self.down(self.act(self.up(x)) * torch.sigmoid(self.gate(x)))


@pytest.fixture(scope="module")
def measured():
    torch.manual_seed(0)
    return measure_many([Block().eval()], (TOKENS, WIDTH), mode="public-weights", runs=3)[0]


def test_kinds_run_securely_and_equal_pytorch(measured):
    assert measured.matches, (measured.max_abs_error, measured.max_abs_output)
    assert measured.kinds == {"layernorm": TOKENS * WIDTH, "matmul": 2 * TOKENS * TOKENS * WIDTH,
                              "softmax": TOKENS * TOKENS, "gelu": TOKENS * 4 * WIDTH,
                              "sigmoid": TOKENS * 4 * WIDTH, "mul": TOKENS * 4 * WIDTH}


def test_spu_cheetah_prices_every_kind_of_the_block(measured):
    work = Workload(measured.relus, measured.relu_layers, measured.macs, smooth=measured.kinds,
                    smooth_layers=measured.kind_layers, truncations=measured.truncations,
                    linear_layers=measured.linear_layers)
    priced = estimate(work, "spu-cheetah")
    assert not priced.lower_bound and priced.priced_share == 1.0
    bytes_mean = sum(run["bytes"] for run in measured.meta["runs"][1:]) / (len(measured.meta["runs"]) - 1)
    assert abs(priced.online_bytes / bytes_mean - 1) < BYTES_TOLERANCE, (priced.online_bytes, bytes_mean)
    # without the kind terms the estimate misses nearly all of it: the block's cost is its kinds
    bare = estimate(work, replace(get_profile("spu-cheetah"), kind_costs={}))
    assert bare.lower_bound and bare.online_bytes < 0.2 * bytes_mean
    # time: CPU seconds of the busier party, within the machine factor tests/test_pi_measure.py allows
    cpu = sum(max(run["cpu_s_by_party"]) for run in measured.meta["runs"][1:]) / (len(measured.meta["runs"]) - 1)
    assert 1 / 5 <= priced.online_s / cpu <= 5, (priced.online_s, cpu)
