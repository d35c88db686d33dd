"""Feed-forward gadgets: exact piecewise-linear maps built from ReLU units.

Each returns an ``FFNWeights`` that *adds* its result to the residual stream (Eq. 1 is residual);
``FFNWeights.concat`` runs several side by side in one FFN.
"""
from __future__ import annotations

import numpy as np

from .layout import Layout
from .weights import FFNWeights


def gated_copy(layout: Layout, src: str, dst: str, off: str | tuple[str, ...], bound: float,
               scale: float = 1.0) -> FFNWeights:
    """dst += scale * src on tokens where the indicator row(s) ``off`` are all 0; nothing where one is 1.

    Units relu(scale*s - B*off) - relu(-scale*s - B*off), 2 per row. Exact (no rounding beyond the
    product scale*s) where off = 0, because then B never meets s; where off = 1 both units are 0
    whenever |scale*s| <= B = ``bound``, and beyond the bound |scale*s| - B leaks. The construction
    declares the bound; the verifier checks the data against it.
    """
    if not bound > 0:
        raise ValueError(f"bound={bound!r} is invalid: expected a float > 0")
    d = layout.size(src)
    if layout.size(dst) != d:
        raise ValueError(f"registers {src!r} ({d} rows) and {dst!r} ({layout.size(dst)} rows) differ in size")
    w1 = np.zeros((2 * d, layout.dim)); w2 = np.zeros((layout.dim, 2 * d))
    eye = np.eye(d)
    w1[:d, layout[src]] = scale * eye
    w1[d:, layout[src]] = -scale * eye
    for row in (off,) if isinstance(off, str) else off:
        w1[:, layout.row(row)] = -bound
    w2[layout[dst], :d] = eye
    w2[layout[dst], d:] = -eye
    return FFNWeights(w1, np.zeros(2 * d), w2, np.zeros(layout.dim))


def identity(layout: Layout, reg: str, scale: float = 1.0, dst: str | None = None) -> FFNWeights:
    """dst (default reg) += scale * reg, exactly for scale = +-1, +-2: relu(u) - relu(-u) = u
    (2 units per row)."""
    dst = reg if dst is None else dst
    d = layout.size(reg)
    w1 = np.zeros((2 * d, layout.dim)); w2 = np.zeros((layout.dim, 2 * d))
    w1[:d, layout[reg]] = np.eye(d)
    w1[d:, layout[reg]] = -np.eye(d)
    w2[layout[dst], :d] = scale * np.eye(d)
    w2[layout[dst], d:] = -scale * np.eye(d)
    return FFNWeights(w1, np.zeros(2 * d), w2, np.zeros(layout.dim))


def zero_where(layout: Layout, reg: str, off: str | tuple[str, ...], bound: float,
               then_scale: float = 1.0) -> FFNWeights:
    """reg <- then_scale * reg where ``off`` is 0, and reg <- 0 exactly where ``off`` is 1.

    Why: a linearised head group leaves rounding residue on tokens whose query data is zero (the
    sink among them); the sink's value is multiplied by e^C / c in the next loop, so residue there
    grows geometrically from loop to loop. Zeroing the register on those tokens stops it (found by
    running the loop: see ``tests/test_newton.py::test_sink_register_stays_zero``).
    FFN output = then_scale * reg * (1 - off) - reg: a gated copy plus an exact identity.
    """
    return FFNWeights.concat(gated_copy(layout, reg, reg, off, bound, then_scale), identity(layout, reg, -1.0))


def leaky_relu_layer(layout: Layout, src: str, dst: str, W: np.ndarray, b: np.ndarray, slope: float,
                     clear_src: bool = False) -> FFNWeights:
    """dst += leaky(W src + b) exactly, as relu(z) - slope * relu(-z) (2 units per output row).

    With ``clear_src`` the FFN also subtracts src (when src and dst are the same register, the
    residual connection would otherwise keep the old value: the pitfall of Thm 3.1's pre-transformer).
    """
    out_dim, in_dim = W.shape
    if in_dim != layout.size(src) or out_dim != layout.size(dst):
        raise ValueError(f"W has shape {W.shape}, expected ({layout.size(dst)}, {layout.size(src)}) "
                         f"for {src!r} -> {dst!r}")
    extra = 2 * in_dim if clear_src else 0
    w1 = np.zeros((2 * out_dim + extra, layout.dim)); w2 = np.zeros((layout.dim, 2 * out_dim + extra))
    b1 = np.zeros(2 * out_dim + extra)
    w1[:out_dim, layout[src]] = W; b1[:out_dim] = b
    w1[out_dim:2 * out_dim, layout[src]] = -W; b1[out_dim:2 * out_dim] = -b
    w2[layout[dst], :out_dim] = np.eye(out_dim)
    w2[layout[dst], out_dim:2 * out_dim] = -slope * np.eye(out_dim)
    if clear_src:
        o = 2 * out_dim
        w1[o:o + in_dim, layout[src]] = np.eye(in_dim)
        w1[o + in_dim:, layout[src]] = -np.eye(in_dim)
        w2[layout[src], o:o + in_dim] += -np.eye(in_dim)
        w2[layout[src], o + in_dim:] += np.eye(in_dim)
    return FFNWeights(w1, b1, w2, np.zeros(layout.dim))
