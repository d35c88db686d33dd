"""Plain numpy algorithms (float64 by default), with the same call signature as the emulators in ``emulate``.

``dtype`` runs the same arithmetic in another numpy dtype: float32 gives the floor that the algorithm
itself has in float32 (what the verifier compares the emulation's floor with), np.longdouble the
reference against which float64's own floor is measured.

Every function takes (problem, iters, ...) and returns a ``Trajectory``: the iterate after every loop
k = 0..T *in the form the tokens hold it*, and the prediction after every loop. So the verifier is
a zip and a norm.

    GD:     iterate_k = [A_k x_1 - y_1, ..., A_k x_N - y_N, A_k x_test]   (B, T+1, N+1, m)
    Newton: iterate_k = [M_k x_1, ..., M_k x_N]                           (B, T+1, N, d)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algoformer.tasks import Regression


@dataclass(frozen=True)
class Trajectory:
    iterates: np.ndarray      # (B, T+1, ...)
    predictions: np.ndarray   # (B, T+1, m)


def _cast(problem: Regression, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(a).astype(dtype) for a in (problem.x, problem.y, problem.x_test))


def gd_reference(problem: Regression, iters: int, eta: float, dtype=np.float64) -> Trajectory:
    """A_{k+1} = A_k - eta/N sum_i (A_k x_i - y_i) x_i^T from A_0 = 0 (Lemma A.2)."""
    x, y, xt = _cast(problem, dtype)
    eta = np.asarray(eta).astype(dtype)
    B, N, d, m = problem.sizes
    A = np.zeros((B, m, d), dtype)
    its, preds = [], []
    for k in range(iters + 1):
        r = np.einsum("bmd,bnd->bnm", A, x) - y
        pred = np.einsum("bmd,bd->bm", A, xt)
        its.append(np.concatenate([r, pred[:, None]], axis=1))
        preds.append(pred)
        A = A - eta * np.einsum("bnm,bnd->bmd", r, x) / np.asarray(N).astype(dtype)
    return Trajectory(np.stack(its, 1), np.stack(preds, 1))


def newton_reference(problem: Regression, iters: int, alpha: float, dtype=np.float64) -> Trajectory:
    """Newton-Schulz M_{k+1} = 2 M_k - M_k S M_k from M_0 = alpha S; w_k = M_k X^T y (Eq. 5)."""
    x, y, xt = _cast(problem, dtype)
    y = y[..., 0]
    S = np.einsum("bni,bnj->bij", x, x)
    M = np.asarray(alpha).astype(dtype) * S
    its, preds = [], []
    for k in range(iters + 1):
        its.append(np.einsum("bij,bnj->bni", M, x))
        w = np.einsum("bij,bnj,bn->bi", M, x, y)
        preds.append(np.einsum("bi,bi->b", w, xt)[:, None])
        M = 2 * M - M @ S @ M
    return Trajectory(np.stack(its, 1), np.stack(preds, 1))
