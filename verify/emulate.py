"""Run a constructed AlgoFormer and read the algorithm's trajectory out of its token rows.

``emulate(construction, problem, iters, dtype, device)`` returns the same ``Trajectory`` as the
numpy references: the iterate register after TF_pre (k = 0) and after every loop, and the answer
read after TF_post applied to every one of those states. Problems are batched: one forward pass
per loop for the whole batch.
"""
from __future__ import annotations

import numpy as np
import torch

from algoformer.tasks import Regression
from constructions.bridge import build_model
from constructions.prompt import Construction

from .references import Trajectory


def emulate(con: Construction, problem: Regression, iters: int, dtype: torch.dtype = torch.float64,
            device: str = "cpu", every_prediction: bool = True) -> Trajectory:
    """``every_prediction=False`` runs TF_post only after the last loop (the sweep's case); the
    predictions of earlier loops are then NaN, the shapes are unchanged."""
    model = build_model(con.weights, dtype=dtype, device=device)
    tokens = torch.from_numpy(con.encode(problem.x, problem.y, problem.x_test)).to(dtype=dtype, device=device)
    lay = con.layout
    its, preds = [], []
    with torch.no_grad():
        h = model.run_pre(model.embed(tokens))                     # (B, n, D)
        for t in range(iters + 1):
            if t > 0:
                h = model.run_loop(h, t)                           # one set of weights, T times
            its.append(con.iterate.read(lay, h))
            if every_prediction or t == iters:
                preds.append(con.answer.read(lay, model.run_post(h)))
            else:
                preds.append(torch.full_like(con.answer.read(lay, h), float("nan")))
    to_np = lambda xs: torch.stack(xs, 1).to(torch.float64).cpu().numpy()
    return Trajectory(to_np(its), to_np(preds))


def relative_error(emulated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per problem: ||emulated - reference|| / ||reference|| over all trailing axes (B,)."""
    B = reference.shape[0]
    diff = np.linalg.norm((emulated - reference).reshape(B, -1), axis=1)
    scale = np.linalg.norm(reference.reshape(B, -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(diff), diff / np.maximum(scale, np.finfo(float).tiny), np.inf)
