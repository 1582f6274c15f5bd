"""Contrastive and distillation losses against hand-computed values and direct formulas."""

from __future__ import annotations

import math

import numpy as np
import torch

from selfsup.methods.clip import clip_loss, siglip_loss
from selfsup.methods.dino import cosine_momentum, dino_loss
from selfsup.methods.simclr import nt_xent_loss


def unit(rows) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def t64(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


# --- NT-Xent (Chen et al. 2020, eq. 1) -----------------------------------------------------------


def nt_xent_direct(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """l(i, j) = -log exp(sim(i, j) / tau) / sum_{k != i} exp(sim(i, k) / tau), averaged over 2N anchors."""
    z = np.concatenate([unit(z1), unit(z2)])
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / denom)
    return total / (2 * n)


def test_nt_xent_hand_computed():
    # identical orthogonal views, tau = 1: each anchor sees its positive at cosine 1 and two
    # negatives at 0, so l = -log(e / (e + 2)) = log(1 + 2 / e) for all four anchors.
    z = t64([[1.0, 0.0], [0.0, 1.0]])
    assert math.isclose(nt_xent_loss(z, z, 1.0).item(), math.log(1 + 2 / math.e), rel_tol=1e-12)


def test_nt_xent_equals_direct_formula():
    rng = np.random.default_rng(0)
    for n, tau in ((2, 0.5), (3, 0.1)):
        z1, z2 = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
        got = nt_xent_loss(t64(z1 * 3.0), t64(z2), tau).item()  # scale does not matter: cosine
        assert math.isclose(got, nt_xent_direct(z1, z2, tau), rel_tol=1e-10)


def test_nt_xent_gradient_matches_direct_torch_formula():
    torch.manual_seed(0)
    z1 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    nt_xent_loss(z1, z2, 0.2).backward()
    g1, g2 = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    terms = []
    for i in range(6):
        others = torch.stack([z[i] @ z[k] / 0.2 for k in range(6) if k != i])
        terms.append(torch.logsumexp(others, 0) - z[i] @ z[(i + 3) % 6] / 0.2)
    torch.stack(terms).mean().backward()
    assert torch.allclose(g1, z1.grad) and torch.allclose(g2, z2.grad)


# --- CLIP (Radford et al. 2021) ------------------------------------------------------------------


def clip_direct(img: np.ndarray, txt: np.ndarray, s: float) -> float:
    """(1/2n) sum_i [-log softmax_j(s img_i . txt_j)_i - log softmax_j(s txt_i . img_j)_i]."""
    n = len(img)
    total = 0.0
    for a, b in ((img, txt), (txt, img)):
        for i in range(n):
            logits = [s * float(a[i] @ b[j]) for j in range(n)]
            total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / (2 * n)


def test_clip_loss_hand_computed():
    # perfectly aligned orthogonal pairs: logits s * I, each CE is log(1 + e^-s)
    e = t64(np.eye(2))
    for s in (1.0, 10.0):
        assert math.isclose(clip_loss(e, e, s).item(), math.log(1 + math.exp(-s)), rel_tol=1e-12)


def test_clip_loss_direct_and_symmetric():
    img = unit([[1, 0, 0], [0.6, 0.8, 0], [0, 0.3, 1]])
    txt = unit([[0.9, 0.1, 0], [0, 1, 0.2], [0.5, 0, 1]])
    got = clip_loss(t64(img), t64(txt), 5.0).item()
    assert math.isclose(got, clip_direct(img, txt, 5.0), rel_tol=1e-12)
    assert math.isclose(got, clip_loss(t64(txt), t64(img), 5.0).item(), rel_tol=1e-12)


# --- SigLIP (Zhai et al. 2023) -------------------------------------------------------------------


def siglip_direct(img: np.ndarray, txt: np.ndarray, t: float, b: float) -> float:
    """-(1/n) sum_ij log sigmoid(z_ij (t img_i . txt_j + b)), z = +1 on the diagonal, -1 off it."""
    n = len(img)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-z * (t * float(img[i] @ txt[j]) + b)))
    return total / n


def test_siglip_loss_hand_computed():
    # img = txt = I_2, t = 1, b = 0: two positives at logit 1 (-log sigmoid(1) = log(1 + e^-1)) and
    # two negatives at logit 0 (log 2), divided by n = 2.
    e = t64(np.eye(2))
    assert math.isclose(siglip_loss(e, e, 1.0, 0.0).item(), math.log(1 + math.exp(-1)) + math.log(2), rel_tol=1e-12)


def test_siglip_loss_direct_and_symmetric():
    img = unit([[1, 0, 0], [0.6, 0.8, 0], [0, 0.3, 1]])
    txt = unit([[0.9, 0.1, 0], [0, 1, 0.2], [0.5, 0, 1]])
    got = siglip_loss(t64(img), t64(txt), 10.0, -10.0).item()
    assert math.isclose(got, siglip_direct(img, txt, 10.0, -10.0), rel_tol=1e-12)
    assert math.isclose(got, siglip_loss(t64(txt), t64(img), 10.0, -10.0).item(), rel_tol=1e-12)


# --- DINO (Caron et al. 2021) --------------------------------------------------------------------


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def test_dino_loss_hand_computed():
    # a student that outputs zeros is uniform: every cross entropy is log K whatever the teacher
    t = [t64([[3.0, 0.0, -1.0]]), t64([[0.0, 2.0, 0.0]])]
    s = [torch.zeros(1, 3, dtype=torch.float64)] * 3
    assert math.isclose(dino_loss(s, t, torch.zeros(1, 3), 0.1, 0.04).item(), math.log(3), rel_tol=1e-12)


def test_dino_loss_direct_formula_with_local_view():
    rng = np.random.default_rng(1)
    B, K = 2, 4
    teacher = [rng.normal(size=(B, K)) for _ in range(2)]
    student = [rng.normal(size=(B, K)) for _ in range(3)]  # 2 global + 1 local
    center = rng.normal(size=(1, K)) * 0.1
    ts, ss = 0.04, 0.1
    total, pairs = 0.0, 0
    for i in range(2):
        for j in range(3):
            if i == j:
                continue
            for b in range(B):
                p = softmax((teacher[i][b] - center[0]) / ts)
                logq = np.log(softmax(student[j][b] / ss))
                total += -(p * logq).sum() / B
            pairs += 1
    assert pairs == 4
    got = dino_loss([t64(x) for x in student], [t64(x) for x in teacher], t64(center), ss, ts).item()
    assert math.isclose(got, total / pairs, rel_tol=1e-10)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.996, 0, 100) == 0.996
    assert math.isclose(cosine_momentum(0.996, 50, 100), 0.998)
    assert cosine_momentum(0.996, 100, 100) == 1.0
    assert cosine_momentum(0.996, 5, 0) == 0.996  # unknown length: the base momentum
