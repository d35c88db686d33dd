"""Predictors that share one call signature, so evaluation is one loop over models and baselines:

    predictor(prompt: Prompt) -> np.ndarray (B, n, o)   predictions at every token (scored or not)

Numpy baselines for regression prompts (Fig. 5), float64: at the token of x_i each fits the samples
1..i-1 and predicts at x_i. Squared loss L(w) = 1/(2(i-1)) sum_j (w.x_j - y_j)^2, S = X^T X.
    least_squares   w = pinv(X) y (minimum-norm least squares)
    gd(k)           k steps of gradient descent from w = 0, step 1/lambda_max(S/(i-1)) (per problem)
    newton(k)       k Newton-Schulz steps of Eq. 5: M_0 = alpha S, M_{j+1} = 2 M_j - M_j S M_j,
                    w_k = M_k X^T y with alpha = 1/lambda_max(S)^2 (inside Eq. 5's open interval)
    zero            predicts 0 everywhere (the baseline the trained models must beat)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .prompts import Prompt

Predictor = Callable[[Prompt], np.ndarray]


def _per_prefix(prompt: Prompt, fit: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    if prompt.x is None:
        raise ValueError("the numpy baselines need a regression prompt (task linear or representation)")
    x, y = prompt.x.astype(np.float64), prompt.y[..., 0].astype(np.float64)   # (B, N, d), (B, N)
    B, N, d = x.shape
    out = np.zeros((B, 2 * N, 1))
    for i in range(1, N):
        w = fit(x[:, :i], y[:, :i])                                           # (B, d)
        out[:, 2 * i, 0] = np.einsum("bd,bd->b", w, x[:, i])
    return out


def _lambda_max(S: np.ndarray) -> np.ndarray:
    return np.maximum(np.linalg.eigvalsh(S)[..., -1], 1e-12)                   # (B,)


def least_squares(prompt: Prompt) -> np.ndarray:
    return _per_prefix(prompt, lambda X, y: np.einsum("bdi,bi->bd", np.linalg.pinv(X), y))


def gd(k: int) -> Predictor:
    def fit(X, y):
        n = X.shape[1]
        S, b = np.einsum("bid,bie->bde", X, X) / n, np.einsum("bid,bi->bd", X, y) / n
        eta = 1.0 / _lambda_max(S)
        w = np.zeros_like(b)
        for _ in range(k):
            w = w - eta[:, None] * (np.einsum("bde,be->bd", S, w) - b)
        return w
    return lambda prompt: _per_prefix(prompt, fit)


def newton(k: int) -> Predictor:
    def fit(X, y):
        S = np.einsum("bid,bie->bde", X, X)
        M = S / _lambda_max(S)[:, None, None] ** 2
        for _ in range(k):
            M = 2 * M - M @ S @ M
        return np.einsum("bde,bie,bi->bd", M, X, y)
    return lambda prompt: _per_prefix(prompt, fit)


def zero(prompt: Prompt) -> np.ndarray:
    return np.zeros_like(prompt.targets, dtype=np.float64)


class ModelPredictor:
    """A trained model behind the predictor signature (no autograd, float32, batches on ``device``)."""

    def __init__(self, model: torch.nn.Module, n_loops: int, device: torch.device | str = "cpu") -> None:
        self.model, self.n_loops, self.device = model, n_loops, torch.device(device)

    @torch.no_grad()
    def __call__(self, prompt: Prompt) -> np.ndarray:
        self.model.eval()
        tokens = torch.as_tensor(prompt.tokens, device=self.device)
        return self.model(tokens, self.n_loops).float().cpu().numpy()

    @torch.no_grad()
    def each_loop(self, prompt: Prompt, max_loops: int) -> np.ndarray:
        """Predictions after t = 0..max_loops loops: (max_loops + 1, B, n, o) (Fig. 3)."""
        self.model.eval()
        tokens = torch.as_tensor(prompt.tokens, device=self.device)
        return self.model.forward_each_loop(tokens, max_loops).float().cpu().numpy()


def per_sample_error(pred: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Squared error (mean over outputs) per in-context sample, averaged over the batch: (N,).
    pred (..., B, n, o) gives (..., N)."""
    err = ((pred - prompt.targets) ** 2).mean(-1)                              # (..., B, n)
    scored = prompt.sample >= 0
    N = int(prompt.sample.max()) + 1
    out = np.zeros(err.shape[:-2] + (N,))
    counts = np.bincount(prompt.sample[scored], minlength=N)
    for pos in np.flatnonzero(scored):
        out[..., prompt.sample[pos]] += err[..., pos].mean(-1)
    return out / np.maximum(counts, 1)
