"""Eq. 2 of the shallow paper, checked against values computed by hand."""

import math

import pytest
import torch

from relucut.finegrained.losses import LossWeights, combined_loss, kd_kl, pram


def test_pram_by_hand():
    s = [torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [5.0, 0.0]])]
    t = [torch.tensor([[4.0, 3.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])]
    # map 1: sample 1 -> |(0.6,0.8)-(0.8,0.6)| = sqrt(0.08); sample 2 -> 0; batch mean sqrt(0.08)/2
    # map 2: both samples are orthogonal unit vectors -> sqrt(2) each
    expected = math.sqrt(0.08) / 2 + math.sqrt(2)
    assert float(pram(s, t)) == pytest.approx(expected, rel=1e-6)


def test_pram_flattens_maps_per_sample():
    a = torch.arange(1.0, 17.0).view(2, 2, 2, 2)
    assert float(pram([a], [3 * a])) == pytest.approx(0.0, abs=1e-6)  # scale does not matter


def test_combined_loss_by_hand():
    z_pr = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    z_ar = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 2])
    maps_s = [torch.tensor([[3.0, 4.0], [1.0, 0.0]])]
    maps_t = [torch.tensor([[4.0, 3.0], [1.0, 0.0]])]
    lam, beta, rho = 0.9, 1000.0, 4.0

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    kl = ce = 0.0
    for zs, zt, label in zip(z_pr.tolist(), z_ar.tolist(), y.tolist()):
        p = softmax([v / rho for v in zs])
        q = softmax([v / rho for v in zt])
        kl += sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))
        ce += -math.log(softmax(zs)[label])
    kl, ce = kl / 2 * rho**2, ce / 2
    pram_value = math.sqrt(0.08) / 2
    expected = lam * kl + (1 - lam) * ce + beta / 2 * pram_value
    got = combined_loss(z_pr, z_ar, y, maps_s, maps_t, LossWeights(lam, beta, rho))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(kd_kl(z_pr, z_ar, rho)) == pytest.approx(kl, rel=1e-5)
    # no teacher: plain cross-entropy
    assert float(combined_loss(z_pr, None, y)) == pytest.approx(ce, rel=1e-5)
