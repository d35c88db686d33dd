"""Predictors that share one call signature, so evaluation is one loop over models and baselines:

    predictor(prompt: Prompt) -> np.ndarray (B, n, o)   predictions at every token (scored or not)

Numpy baselines for regression prompts (Fig. 5), float64: at the token of x_i each fits the samples
1..i-1 and predicts at x_i. Squared loss L(w) = 1/(2(i-1)) sum_j (w.x_j - y_j)^2, S = X^T X.
    least_squares   w = pinv(X) y (minimum-norm least squares)
    gd(k)           k steps of gradient descent from w = 0, step 1/lambda_max(S/(i-1)) (per problem)
    newton(k)       k Newton-Schulz steps of Eq. 5: M_0 = alpha S, M_{j+1} = 2 M_j - M_j S M_j,
                    w_k = M_k X^T y with alpha = 1/lambda_max(S)^2 (inside Eq. 5's open interval)
    zero            predicts 0 everywhere (the baseline the trained models must beat)

gd(k, eta=...) and newton(k, alpha=...) take one fixed step for every problem instead (a run
initialised from a construction: its weights fix the step), and ``each_step`` returns the
predictions after every step 0..k, on Phi*(x) instead of x where ``features`` is given (Fig. 3).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .prompts import Prompt

Predictor = Callable[[Prompt], np.ndarray]


def _per_prefix(prompt: Prompt, fit: Callable[[np.ndarray, np.ndarray], np.ndarray],
                features: Callable[[np.ndarray], np.ndarray] | None = None,
                samples: np.ndarray | None = None) -> np.ndarray:
    """Predictions (..., B, 2N, 1) at the x-tokens of the prompt's samples (all, or ``samples``); ``fit``
    maps the prefix (X (B, i, d), y (B, i)) to weights (..., B, d)."""
    if prompt.x is None:
        raise ValueError("the numpy baselines need a regression prompt (task linear or representation)")
    x, y = prompt.x.astype(np.float64), prompt.y[..., 0].astype(np.float64)   # (B, N, d), (B, N)
    if features is not None:
        x = np.asarray(features(x), dtype=np.float64)
    B, N, d = x.shape
    out = None
    for i in range(1, N):
        if samples is not None and i not in samples:
            continue
        w = fit(x[:, :i], y[:, :i])                                           # (..., B, d)
        if out is None:
            out = np.zeros(w.shape[:-2] + (B, 2 * N, 1))
        out[..., 2 * i, 0] = np.einsum("...bd,bd->...b", w, x[:, i])
    return np.zeros((B, 2 * N, 1)) if out is None else out


def _lambda_max(S: np.ndarray) -> np.ndarray:
    return np.maximum(np.linalg.eigvalsh(S)[..., -1], 1e-12)                   # (B,)


def least_squares(prompt: Prompt) -> np.ndarray:
    return _per_prefix(prompt, lambda X, y: np.einsum("bdi,bi->bd", np.linalg.pinv(X), y))


def _gd_path(X: np.ndarray, y: np.ndarray, k: int, eta: float | None) -> np.ndarray:
    """Iterates w_0 = 0 .. w_k of GD on L(w) = 1/(2n) sum_j (w.x_j - y_j)^2: (k + 1, B, d)."""
    n = X.shape[1]
    S, b = np.einsum("bid,bie->bde", X, X) / n, np.einsum("bid,bi->bd", X, y) / n
    step = 1.0 / _lambda_max(S) if eta is None else np.full(len(S), float(eta))
    w = np.zeros_like(b)
    path = [w]
    for _ in range(k):
        w = w - step[:, None] * (np.einsum("bde,be->bd", S, w) - b)
        path.append(w)
    return np.stack(path)


def _newton_path(X: np.ndarray, y: np.ndarray, k: int, alpha: float | None) -> np.ndarray:
    """w_j = M_j X^T y for j = 0..k, M_0 = alpha S, M_{j+1} = 2 M_j - M_j S M_j: (k + 1, B, d)."""
    S = np.einsum("bid,bie->bde", X, X)
    M = S / _lambda_max(S)[:, None, None] ** 2 if alpha is None else float(alpha) * S
    Xy = np.einsum("bie,bi->be", X, y)
    path = [np.einsum("bde,be->bd", M, Xy)]
    for _ in range(k):
        M = 2 * M - M @ S @ M
        path.append(np.einsum("bde,be->bd", M, Xy))
    return np.stack(path)


PATHS = {"gd": _gd_path, "newton": _newton_path}


def gd(k: int, eta: float | None = None) -> Predictor:
    return lambda prompt: _per_prefix(prompt, lambda X, y: _gd_path(X, y, k, eta)[-1])


def newton(k: int, alpha: float | None = None) -> Predictor:
    return lambda prompt: _per_prefix(prompt, lambda X, y: _newton_path(X, y, k, alpha)[-1])


def each_step(algorithm: str, k: int, step: float | None = None,
              features: Callable[[np.ndarray], np.ndarray] | None = None,
              samples: np.ndarray | None = None) -> Callable[[Prompt], np.ndarray]:
    """prompt -> predictions after j = 0..k steps of ``algorithm`` (gd or newton), (k + 1, B, 2N, 1),
    at the samples given (default all), fitting on features(x) where given."""
    if algorithm not in PATHS:
        raise ValueError(f"algorithm={algorithm!r} is invalid: expected one of {', '.join(PATHS)}")
    path = PATHS[algorithm]
    return lambda prompt: _per_prefix(prompt, lambda X, y: path(X, y, k, step), features, samples)


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
    pred (..., B, n, o) gives (..., N); samples the prompt does not score get 0 (``scored_samples``)."""
    with np.errstate(over="ignore", invalid="ignore"):                         # a diverged model: inf / nan
        err = ((pred - prompt.targets) ** 2).mean(-1)                          # (..., B, n)
    scored = prompt.sample >= 0
    N = int(prompt.sample.max()) + 1
    out = np.zeros(err.shape[:-2] + (N,))
    counts = np.bincount(prompt.sample[scored], minlength=N)
    for pos in np.flatnonzero(scored):
        out[..., prompt.sample[pos]] += err[..., pos].mean(-1)
    return out / np.maximum(counts, 1)


def scored_samples(prompt: Prompt) -> np.ndarray:
    """The in-context sample indices the prompt scores, ascending."""
    return np.unique(prompt.sample[prompt.sample >= 0])
