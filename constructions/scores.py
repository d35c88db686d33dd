"""Score bounds: the largest |a| each linearised head group meets, which sets its c = theta / max|a|
(``linearise.choose_temperature``). One home for the verifier (``verify.algorithms*``) and the
training initialisers (``initialise``); data are ``algoformer.tasks.Regression`` batches.
"""
from __future__ import annotations

import numpy as np

from algoformer.tasks import Regression

from .newton import loop_score_bound


def gram_max(p: Regression) -> float:
    """max |x_j . x_i| over samples i and samples-or-test j (the scores of GD's and Newton's pre heads)."""
    pts = np.concatenate([p.x, p.x_test[:, None]], axis=1)
    return float(np.abs(np.einsum("bni,bmi->bnm", pts, p.x)).max())


def newton_score_bounds(p: Regression, alpha: float) -> dict[str, float]:
    """pre: |x_i.x_j|; loop: ``newton.loop_score_bound``; post: |x_j^T M_k x_i| <= 2 sqrt(h_j h_i) with
    h = x^T S^{-1} x (M_k is PSD with M_k S's eigenvalues in (0, 2)), x_j a sample or x_test."""
    Sinv = np.linalg.inv(np.einsum("bni,bnj->bij", p.x, p.x))
    h = np.einsum("bni,bij,bnj->bn", p.x, Sinv, p.x).max()
    h_test = np.einsum("bi,bij,bj->b", p.x_test, Sinv, p.x_test).max()
    return {"pre": gram_max(p), "loop": loop_score_bound(p.x, alpha),
            "post": float(2.0 * np.sqrt(max(h, h_test) * h))}


def prefix_moments(p: Regression) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All N + 1 positions: X (B, N+1, d) with x_test last, S_i = mean_{j<i} x_j x_j^T, b_i = mean y_j x_j
    (zero for i = 1, whose prefix is empty)."""
    x, y = p.x, p.y[..., 0]
    B, N, d = x.shape
    X = np.concatenate([x, p.x_test[:, None]], axis=1)
    cum_S = np.concatenate([np.zeros((B, 1, d, d)), np.cumsum(np.einsum("bni,bnj->bnij", x, x), axis=1)], axis=1)
    cum_b = np.concatenate([np.zeros((B, 1, d)), np.cumsum(y[..., None] * x, axis=1)], axis=1)
    count = np.maximum(np.arange(N + 1), 1.0)                      # i - 1 samples before x_i
    return X, cum_S / count[None, :, None, None], cum_b / count[None, :, None]


def decoder_score_bounds(p: Regression, eta: float) -> dict[str, float]:
    """max |a| of each head group of the decoder GD (Thm 4.2) over every loop. GD from 0 keeps w^i_k in
    the range of S_i with components (1 - (1 - eta lambda)^k) w*_i, so ||w^i_k|| <= kappa ||w*_i||,
    w*_i = S_i^+ b_i, kappa = 1 if eta lambda_max <= 1 else 2. mean: |w^T x_j - y_j| over j < i;
    post: |w^T x_j| over j <= i."""
    X, S, b = prefix_moments(p)
    w_star = np.einsum("bnij,bnj->bni", np.linalg.pinv(S, hermitian=True), b)
    kappa = np.where(eta * np.linalg.eigvalsh(S)[..., -1] <= 1.0, 1.0, 2.0)
    w_max = kappa * np.linalg.norm(w_star, axis=-1)                                   # (B, N+1)
    x_norm = np.linalg.norm(p.x, axis=-1)
    zero = np.zeros((x_norm.shape[0], 1))
    run_x = np.concatenate([zero, np.maximum.accumulate(x_norm, axis=1)], axis=1)
    run_y = np.concatenate([zero, np.maximum.accumulate(np.abs(p.y[..., 0]), axis=1)], axis=1)
    seen_x = np.maximum.accumulate(np.linalg.norm(X, axis=-1), axis=1)          # keys +-x_j, j < i, and x_i
    return {"post": max(float((w_max * seen_x).max()), 1e-300),
            "mean": max(float((w_max * run_x + run_y).max()), 1e-300)}
