"""Lemma A.2 (one GD step for multivariate regression) and the GD AlgoFormer around it.

Problem: L(A) = 1/(2N) sum_i ||A x_i - y_i||^2, grad L(A) = 1/N sum_i (A x_i - y_i) x_i^T,
A_{k+1} = A_k - eta grad L(A_k), A_0 = 0.

Layout (tokens as in ``prompt``; registers added here):

    token      x_i               y_i         x_test        sink
    xN         x_i / N           -x_i / N    0             0          keys of the GD heads (mirrored)
    r          A_k x_i - y_i     0           A_k x_test    0          the residual register
    answer     .                 .           .             A_T x_test (after TF_post)

TF_pre (1 layer, 2 heads + FFN):
    pairing head (Lemma A.1): r <- -2 mean_pair(y) = -y_i on x_i; y-tokens, the test token and the
        sink attend to the sink instead (``silence``) and get exactly 0
    pairing head: xN <- -2/N mean_pair(x) = -x_i / N on both tokens of pair i (test, sink silenced)
    FFN: xN += 2 x / N gated off on the test token (``gadgets.gated_copy``, exact for |x| <= x_bound):
        x_i / N on x-tokens, -x_i / N on y-tokens, exactly
TF_loop (1 layer = Lemma A.2, the heads of one linearised group + FFN):
    query x_j, key xN_i, value -eta r_i:  r_j <- r_j - eta sum_i r_i x_i^T x_j / N = r_j - eta grad L(A_k) x_j
    which is A_{k+1} x_j - y_j on x-tokens and A_{k+1} x_test on the test token. The y-tokens hold
    the negated keys with value 0: the key set is symmetric, which the ``mirror`` variants need and
    the sink variants do not mind. Queries with x = 0 (y-tokens, sink) receive cancelling heads.
    FFN: r <- 0 exactly on the sink (``gadgets.zero_where``, exact while |r| <= register_bound): the
        heads leave rounding residue at queries with x = 0, and with a sink variant the sink's value
        is multiplied by e^C / c in the next loop.
TF_post (1 layer, 1 head): the sink attends to the test token (query beta on is_sink, key is_test,
    beta = 800 so every other weight underflows to 0): answer <- r_test = A_T x_test.

Mirrored values (the ``sinh`` variants, ``linearise.odd_values``): two more registers, and the y-token
of pair i becomes the exact negative of its x-token in everything the heads read.

    token      x_i               y_i              x_test        sink
    xq         x_i               -x_i             x_test        0          queries
    rv         A_k x_i - y_i     -(A_k x_i - y_i) 0             0          values
    r          A_k x_i - y_i     -(A_k x_i - y_i) A_k x_test    0          the iterate (as above)

    TF_pre: the pairing head on x also writes -x_i into xq (both pair tokens), the FFN adds x on every
        token and x again off the test token (x_i on x-tokens, -x_i on y-tokens, x_test on the test
        token, exactly); the pairing head on y writes -y_i into r and rv on *both* pair tokens and the
        FFN adds 2y (the y register is y_i on y-tokens only): -y_i on x_i, +y_i on y_i.
    TF_loop (2 layers):
      1. query xq, key xN, value -eta rv, written to r and rv; the FFN zeroes rv exactly on the
         y-tokens, the test token and the sink (the test token's key is 0, and a key 0 with a nonzero
         value would make the heads even), and r on the y-tokens and the sink.
      2. the pairing head (Lemma A.1, exact in floating point) writes -2 mean_pair(rv) = -rv_i onto
         the y-token of pair i (x-tokens, test and sink silenced): the mirror is re-formed *exactly*.
    Why re-form instead of letting the y-token's query (-x_i) update its own copy: rounding leaves a
    symmetric residue (rv_x + rv_y != 0), the heads answer a symmetric part with their constant term,
    of size ~ residue / c, and that grows as (1/c)^k over the loops (1e27 after 20 loops at
    theta = 0.1, found by running it). An exact copy has no symmetric part at all.
    Every head is now odd by itself; see ``linearise`` for why that halves the heads per order and
    lowers the rounding floor.

Where this differs from the printed Lemma A.2, and why:
  * The printed layer writes +c grad L x through W_V = e^C r and relies on an FFN "weight" to turn it
    into -eta grad L x; no per-row linear FFN can do that (it would scale r itself too). The factor
    -eta / c sits in W_V here (CONSTRUCTIONS.md defect 2).
  * The printed output drops the x/N rows, so the printed layer cannot be looped; here the loop layer
    maps the layout onto itself (defect 3; ``tests/test_gd.py`` checks it).
  * The paper keeps x/N in the prompt; here TF_pre computes it, and the pairing head of Lemma A.1
    forms r = A_0 x - y with A_0 = 0 from the interleaved prompt.
  * The heads are a ``linearise`` variant: ``paper`` is the printed sink + constant-cancel pair; the
    default ``odd+mirror`` uses the same two heads with scores +-c a and no sink (mirrored keys).
"""
from __future__ import annotations

import numpy as np

from .embeddings import exact_pairing_beta, pairing_head, quasi_orthogonal
from .gadgets import gated_copy, identity, zero_where
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature, bilinear_heads, odd_values
from .prompt import Construction, Readout, regression_layout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

SELECT_BETA = 800.0   # indicator-attention score: e^{-800} underflows to 0 in float32 and float64


def gd_layout(d: int, m: int, pos_dim: int, mirrored_values: bool = False) -> Layout:
    lay = regression_layout(d, m, pos_dim)
    lay.add("xN", d)
    lay.add("r", m)
    lay.add("answer", m)
    if mirrored_values:
        lay.add("xq", d)
        lay.add("rv", m)
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
                  register_bound: float = 1e8, n_keys: int | None = None) -> LayerWeights:
    """Lemma A.2: one GD step as one layer; maps the layout onto itself (loopable). ``n_keys``: the
    number of tokens every query sees (needed by the mirror variants). A layout with the ``xq`` and
    ``rv`` registers (``gd_layout(mirrored_values=True)``) gets the mirrored-value step."""
    d = layout.size("x")
    mirrored = "rv" in layout
    query = np.zeros((d, layout.dim)); key = np.zeros((d, layout.dim))
    query[:, layout["xq" if mirrored else "x"]] = np.eye(d)
    key[:, layout["xN"]] = np.eye(d)
    if not mirrored:
        heads = bilinear_heads(layout, query, key, move(layout, "r", "r", -eta), temp, variant, "gd",
                               n_keys=n_keys)
        return LayerWeights(heads=heads, ffn=zero_where(layout, "r", "is_sink", register_bound), name="gd-step")
    value = move(layout, "rv", "r", -eta) + move(layout, "rv", "rv", -eta)
    heads = bilinear_heads(layout, query, key, value, temp, variant, "gd", n_keys=n_keys, mirrored_values=True)
    ffn = FFNWeights.concat(zero_where(layout, "rv", ("is_y", "is_test", "is_sink"), register_bound),
                            zero_where(layout, "r", ("is_y", "is_sink"), register_bound))
    return LayerWeights(heads=heads, ffn=ffn, name="gd-step")


def gd_mirror_layer(layout: Layout, pos_eps: float) -> LayerWeights:
    """The second loop layer of the mirrored-value GD: rv on y_i <- -rv on x_i, exactly."""
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    head = pairing_head(layout, "pos", move(layout, "rv", "rv", -2.0), beta, "mirror-rv",
                        silence=("is_x", "is_test", "is_sink"))
    return LayerWeights(heads=(head,), name="gd-mirror")


def gd_registers_layer(layout: Layout, N: int, x_bound: float, pos_eps: float) -> LayerWeights:
    """TF_pre: r = A_0 x - y (A_0 = 0) and the mirrored keys xN (pairing heads + a gated FFN); with
    the ``xq``/``rv`` registers also the mirrored queries and values (module docstring)."""
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    ffn = gated_copy(layout, "x", "xN", off="is_test", bound=2 * x_bound / N, scale=2.0 / N)
    if "rv" not in layout:
        pair_y = pairing_head(layout, "pos", move(layout, "y", "r", -2.0), beta, "pair-y",
                              silence=("is_y", "is_test", "is_sink"))
        pair_x = pairing_head(layout, "pos", move(layout, "x", "xN", -2.0 / N), beta, "pair-x",
                              silence=("is_test", "is_sink"))
        return LayerWeights(heads=(pair_y, pair_x), ffn=ffn, name="gd-registers")
    pair_y = pairing_head(layout, "pos", move(layout, "y", "r", -2.0) + move(layout, "y", "rv", -2.0), beta,
                          "pair-y", silence=("is_test", "is_sink"))
    pair_x = pairing_head(layout, "pos", move(layout, "x", "xN", -2.0 / N) + move(layout, "x", "xq", -2.0), beta,
                          "pair-x", silence=("is_test", "is_sink"))
    ffn = FFNWeights.concat(ffn, identity(layout, "y", 2.0, dst="r"), identity(layout, "y", 2.0, dst="rv"),
                            identity(layout, "x", 1.0, dst="xq"),
                            gated_copy(layout, "x", "xq", off="is_test", bound=x_bound))
    return LayerWeights(heads=(pair_y, pair_x), ffn=ffn, name="gd-registers")


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
    lay = gd_layout(d, m, P.shape[1], mirrored_values=odd_values(variant))
    weights = AlgoFormerWeights(
        lay,
        pre=(gd_registers_layer(lay, N, x_bound, pos_eps),),
        loop=(gd_step_layer(lay, eta, temp, variant, register_bound, n_keys=2 * N + 2),)
             + ((gd_mirror_layer(lay, pos_eps),) if odd_values(variant) else ()),
        post=(gd_answer_layer(lay),),
        notes={"algorithm": "gd", "d": d, "m": m, "N": N, "eta": eta, "C": temp.C, "c": temp.c,
               "variant": variant},
    )
    iterate_tokens = list(range(0, 2 * N, 2)) + [2 * N]          # x-tokens, then the test token
    return Construction(weights, P, answer=Readout("answer", 2 * N + 1),
                        iterate=Readout("r", iterate_tokens),
                        assumptions={"N": N, "x_bound": x_bound, "register_bound": register_bound})
