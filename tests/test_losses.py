"""Eq. 2 of the shallow paper, checked against values computed by hand."""

import math

import pytest
import torch

from relucut.finegrained.losses import LossWeights, attention_transfer, combined_loss, pram
from relucut.train.kd import soft_kd as kd_kl


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
    got = combined_loss(z_pr, z_ar, y, maps_s, maps_t, LossWeights(lam, beta, rho, feature_loss="pram"))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(kd_kl(z_pr, z_ar, rho)) == pytest.approx(kl, rel=1e-5)
    # no teacher: plain cross-entropy
    assert float(combined_loss(z_pr, None, y)) == pytest.approx(ce, rel=1e-5)


def test_attention_transfer_by_hand():
    # one sample, 2 channels, 1x2 map: attention = mean_c x^2 = (2.5, 8), normalized
    s = torch.tensor([[[[1.0, 2.0]], [[2.0, 4.0]]]])
    t = torch.tensor([[[[0.0, 2.0]], [[2.0, 0.0]]]])
    a_s = torch.tensor([2.5, 10.0]) / math.hypot(2.5, 10.0)
    a_t = torch.tensor([2.0, 2.0]) / math.hypot(2.0, 2.0)
    expected = float((a_s - a_t).pow(2).mean())
    assert float(attention_transfer([s], [t])) == pytest.approx(expected, rel=1e-6)
    assert float(attention_transfer([s], [3 * s])) == pytest.approx(0.0, abs=1e-7)  # scale does not matter


def test_feature_term_starts_near_the_kd_term_on_a_real_batch():
    """The default feature term (attention transfer, weight 1000) is on the KD term's scale at the
    start of fine-tuning; eq. 2 read literally (whole-map PRAM) is orders of magnitude above it."""
    import copy

    from fixtures.finegrained import tiny_data, trained_base

    from relucut.finegrained.common import FeatureLoss
    from relucut.finegrained.mask_site import install_mask_sites
    from relucut.train.batches import DeviceBatches
    from relucut.train.kd import kd_loss

    from relucut.finegrained.budget import binarize_to_budget
    from relucut.finegrained.common import relu_effect

    data = tiny_data(1000)
    teacher = trained_base(data, epochs=6).eval()  # a teacher that has learned something (~70 %)
    student = copy.deepcopy(teacher)
    _, masks = install_mask_sites(student, (1, 8, 8), "pixel")
    keep = binarize_to_budget(masks, 1000, tiebreak=relu_effect(student, masks, data))
    for name, m in masks.items():  # SENet's starting point: the ReLUs that matter most, under budget
        m.freeze(keep[name])
    x, y = next(DeviceBatches(data.train, data.mean, data.std).batches(128))
    terms = {}
    for kind in ("attention", "pram"):
        weights = LossWeights(feature_loss=kind)
        features = FeatureLoss(student, teacher, weights)
        with torch.no_grad():
            t_logits, s_logits = teacher(x), student(x)
        terms[kind] = float(features(None))
        features.close()
    kd = float(0.9 * kd_kl(s_logits, t_logits, 4.0))
    assert kd > 0
    assert kd / 10 <= terms["attention"] <= 10 * kd, (terms, kd)
    assert terms["pram"] > 50 * kd, (terms, kd)  # measured 2,200 against 10
    assert float(kd_loss(s_logits, t_logits, y)) > 0
