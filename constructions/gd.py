"""Lemma A.2 (one GD step for multivariate regression) and the GD AlgoFormer around it.

Problem: L(A) = 1/(2N) sum_i ||A x_i - y_i||^2, grad L(A) = 1/N sum_i (A x_i - y_i) x_i^T,
A_{k+1} = A_k - eta grad L(A_k), A_0 = 0.

Layout (tokens as in ``prompt``; registers added here):
    xN      x_i / N on x-tokens, 0 elsewhere (also 0 on the test token)     keys of the GD heads
    r       A_k x_i - y_i on x-tokens, A_k x_test on the test token, 0 on y-tokens and the sink
    answer  A_T x_test on the sink token after TF_post

TF_pre (1 layer, 1 head + FFN):
    pairing head (Lemma A.1): r <- -2 * mean_{pair}(y)  = -y_i on x_i, 0 on test and sink; the
        y-tokens attend to the sink instead (``silence``), so r = 0 there
    FFN: xN <- x / N gated off on the test token (``gadgets.gated_copy``, exact for |x| <= x_bound)
TF_loop (1 layer, the heads of one linearised group, no FFN):
    query x_j, key xN_i, value -eta r_i:  r_j <- r_j - eta sum_i r_i x_i^T x_j / N = r_j - eta grad L(A_k) x_j
    This is A_{k+1} x_j - y_j on x-tokens and A_{k+1} x_test on the test token. y-tokens, the test
    token and the sink have key xN = 0 (score 0), so their values cancel between the heads; queries
    with x = 0 (y-tokens, sink) receive exactly cancelling heads, so r stays put there.
    FFN: r <- 0 exactly on the sink (``gadgets.zero_where``, exact while |r| <= register_bound): the
    heads leave rounding residue at queries with x = 0, and the sink's value is multiplied by e^C / c.
TF_post (1 layer, 1 head): the sink attends to the test token (query beta on is_sink, key is_test,
    beta = 800 so every other weight underflows to 0): answer <- r_test = A_T x_test.

Where this differs from the printed Lemma A.2, and why:
  * The printed layer writes +c grad L x through W_V = e^C r and relies on an FFN "weight" to turn it
    into -eta grad L x; no per-row linear FFN can do that (it would scale r itself too). The factor
    -eta / c sits in W_V here (CONSTRUCTIONS.md defect 2).
  * The printed output drops the x/N rows, so the printed layer cannot be looped; here the loop layer
    maps the layout onto itself (defect 3; ``tests/test_gd.py`` checks it).
  * The paper keeps x/N in the prompt; here TF_pre computes it, and the pairing head of Lemma A.1
    forms r = A_0 x - y with A_0 = 0 from the interleaved prompt.
  * The two heads are a ``linearise`` variant: ``paper`` is the printed constant-cancel pair; the
    default ``odd`` pair cancels the second-order term as well.
"""
from __future__ import annotations

import numpy as np

from .embeddings import exact_pairing_beta, pairing_head, quasi_orthogonal
from .gadgets import gated_copy, zero_where
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature, bilinear_heads
from .prompt import Construction, Readout, regression_layout
from .weights import AlgoFormerWeights, HeadWeights, LayerWeights

SELECT_BETA = 800.0   # indicator-attention score: e^{-800} underflows to 0 in float32 and float64


def gd_layout(d: int, m: int, pos_dim: int) -> Layout:
    lay = regression_layout(d, m, pos_dim)
    lay.add("xN", d)
    lay.add("r", m)
    lay.add("answer", m)
    return lay


def move(layout: Layout, src: str, dst: str, scale: float = 1.0) -> np.ndarray:
    """A D x D value map: dst <- scale * src (all other rows zero)."""
    V = np.zeros((layout.dim, layout.dim))
    V[layout[dst], layout[src]] = scale * np.eye(layout.size(src))
    return V


def select_head(layout: Layout, at: str, source: str, value: np.ndarray, name: str) -> HeadWeights:
    """Tokens with indicator ``at`` attend (weight 1 up to e^{-800}) to the token with ``source``."""
    q = np.zeros((1, layout.dim)); k = np.zeros((1, layout.dim))
    q[0, layout.row(at)] = SELECT_BETA
    k[0, layout.row(source)] = 1.0
    return HeadWeights(q, k, value, name)


def gd_step_layer(layout: Layout, eta: float, temp: Temperature, variant: str = DEFAULT_VARIANT,
                  register_bound: float = 1e8) -> LayerWeights:
    """Lemma A.2: one GD step as one layer; maps the layout onto itself (loopable)."""
    d = layout.size("x")
    query = np.zeros((d, layout.dim)); key = np.zeros((d, layout.dim))
    query[:, layout["x"]] = np.eye(d)
    key[:, layout["xN"]] = np.eye(d)
    heads = bilinear_heads(layout, query, key, move(layout, "r", "r", -eta), temp, variant, "gd")
    return LayerWeights(heads=heads, ffn=zero_where(layout, "r", "is_sink", register_bound), name="gd-step")


def gd_registers_layer(layout: Layout, N: int, x_bound: float, pos_eps: float) -> LayerWeights:
    """TF_pre: r = A_0 x - y (A_0 = 0) through the pairing head, xN = x / N through a gated FFN."""
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    pair = pairing_head(layout, "pos", move(layout, "y", "r", -2.0), beta, "pair-y", silence="is_y")
    ffn = gated_copy(layout, "x", "xN", off="is_test", bound=x_bound / N, scale=1.0 / N)
    return LayerWeights(heads=(pair,), ffn=ffn, name="gd-registers")


def gd_answer_layer(layout: Layout) -> LayerWeights:
    return LayerWeights(heads=(select_head(layout, "is_sink", "is_test", move(layout, "r", "answer"), "to-answer"),),
                        name="gd-answer")


def check_sizes(**kw) -> None:
    for name, v in kw.items():
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ValueError(f"{name}={v!r} is invalid: expected an integer >= 1")


def gd_construction(d: int, N: int, eta: float, temp: Temperature, m: int = 1,
                    variant: str = DEFAULT_VARIANT, x_bound: float = 100.0, pos_eps: float = 0.1,
                    seed: int = 0, register_bound: float = 1e8) -> Construction:
    """The GD AlgoFormer: TF_pre forms the registers, TF_loop is Lemma A.2, TF_post reads A_T x_test."""
    check_sizes(d=d, N=N, m=m)
    if not eta > 0:
        raise ValueError(f"eta={eta!r} is invalid: expected a float > 0")
    if not x_bound > 0:
        raise ValueError(f"x_bound={x_bound!r} is invalid: expected a float > 0")
    P = quasi_orthogonal(N + 1, pos_eps, seed)
    lay = gd_layout(d, m, P.shape[1])
    weights = AlgoFormerWeights(
        lay,
        pre=(gd_registers_layer(lay, N, x_bound, pos_eps),),
        loop=(gd_step_layer(lay, eta, temp, variant, register_bound),),
        post=(gd_answer_layer(lay),),
        notes={"algorithm": "gd", "d": d, "m": m, "N": N, "eta": eta, "C": temp.C, "c": temp.c,
               "variant": variant},
    )
    iterate_tokens = list(range(0, 2 * N, 2)) + [2 * N]          # x-tokens, then the test token
    return Construction(weights, P, answer=Readout("answer", 2 * N + 1),
                        iterate=Readout("r", iterate_tokens),
                        assumptions={"N": N, "x_bound": x_bound, "register_bound": register_bound})
