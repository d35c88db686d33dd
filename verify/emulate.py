"""Run a constructed AlgoFormer and read the algorithm's trajectory out of its token rows.

``emulate(construction, problem, iters, dtype, device)`` returns the same ``Trajectory`` as the
numpy references: the iterate register after TF_pre (k = 0) and after every loop, and the answer
read after TF_post applied to every one of those states. Problems are batched: one forward pass
per loop for the whole batch. ``dtype`` is a torch dtype or a name of ``sweep.PRECISIONS``
("float64", "float32", "bfloat16", "tf32": float32 storage with TF32 matmuls, CUDA only;
"float32+attn64", "bfloat16+attn32": the attention sublayers in the wider dtype).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from algoformer.tasks import Regression
from constructions.bridge import build_model
from constructions.prompt import Construction

from .references import Trajectory


@contextlib.contextmanager
def tf32_matmuls(on: bool = True):
    """Switch TF32 on for CUDA matmuls and cuDNN inside the block (if ``on``); restore the flags after."""
    if not on:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def resolve_dtype(dtype: torch.dtype | str) -> tuple[torch.dtype, bool]:
    """(storage dtype, TF32 matmuls?) for a torch dtype or a ``PRECISIONS`` name."""
    if isinstance(dtype, torch.dtype):
        return dtype, False
    from .sweep import PRECISIONS        # here: the sweep imports this module
    p = PRECISIONS[dtype]
    return p.storage, p.tf32


def attention_dtype(dtype: torch.dtype | str) -> str | None:
    """The wider dtype the attention runs in for a ``PRECISIONS`` name (None: the storage dtype)."""
    if isinstance(dtype, torch.dtype):
        return None
    from .sweep import PRECISIONS
    return PRECISIONS[dtype].attention


def emulate(con: Construction, problem: Regression, iters: int, dtype: torch.dtype | str = torch.float64,
            device: str = "cpu", every_prediction: bool = True) -> Trajectory:
    """``every_prediction=False`` runs TF_post only after the last loop (the sweep's case); the
    predictions of earlier loops are then NaN, the shapes are unchanged. The trajectory comes back
    in float64 (cast from the run's dtype), so errors against the reference are formed in float64."""
    upcast = attention_dtype(dtype)
    dtype, tf32 = resolve_dtype(dtype)
    if tf32 and torch.device(device).type != "cuda":
        raise ValueError(f"device={device!r} is invalid for tf32: TF32 matmuls need a CUDA device")
    with tf32_matmuls(tf32):
        return _emulate(con, problem, iters, dtype, device, every_prediction, upcast)


def _emulate(con: Construction, problem: Regression, iters: int, dtype: torch.dtype, device: str,
             every_prediction: bool, upcast: str | None = None) -> Trajectory:
    model = build_model(con.weights, dtype=dtype, device=device, attention_dtype=upcast)
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
    """Per problem: ||emulated - reference|| / ||reference|| over all trailing axes (B,).

    Both are divided by max|reference| before the norms are taken, so tiny values (an eta of 1e-200
    gives predictions near 1e-200, whose squares underflow to 0) and huge ones keep their ratio. A
    zero reference gives 0 where the emulation is exactly 0 too, else inf; a non-finite emulation inf."""
    B = reference.shape[0]
    ref = np.asarray(reference, np.float64).reshape(B, -1)
    emu = np.asarray(emulated, np.float64).reshape(B, -1)
    scale = np.abs(ref).max(axis=1, initial=0.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.where(scale > 0, scale, 1.0)
        diff = emu - ref                        # exact for nearby values: no rounding added before the scale
        diff = np.where(np.isfinite(diff) | ~np.isfinite(emu), diff, emu / s - ref / s)   # huge, opposite signs
        num = np.linalg.norm(diff / s, axis=1)
        den = np.linalg.norm(ref / s, axis=1)
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num == 0, 0.0, np.inf))
    return np.where(np.isfinite(out), out, np.inf)
