"""Lemma A.1: quasi-orthogonal positional embeddings, and the pairing head built on them.

Lemma A.1 (paper): for any eps > 0 there are p_1..p_N of dimension O(log N) with
p_i.p_i > p_i.p_j + eps for all i != j.

Construction. Draw P in {-1, +1}^{N x m} uniformly and use p_i = P_i / sqrt(m), so p_i.p_i = 1.
For i != j, p_i.p_j is a mean of m independent signs; Hoeffding gives
P(p_i.p_j >= 1 - eps) <= exp(-m (1 - eps)^2 / 2), and a union bound over the N(N-1)/2 pairs shows
that every margin exceeds eps with probability >= 1 - delta once

    m >= 2 ln(N^2 / (2 delta)) / (1 - eps)^2          (``embedding_dim``; O(log N) for fixed eps).

The margin of the drawn set is then *checked*; a failing draw is redrawn (and m grown after a few
failures), so a violating set is never returned.

Floating point. We keep the integer matrix P (entries +-1) in the tokens and put the scale into the
query: a head with query (beta/m) * P_j and key P_i scores beta * p_j.p_i. When beta/m is a power of
two these scores are exact, so tokens sharing an embedding get exactly equal weight. This is a
departure from the paper that buys exactness: see ``pairing_head``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .layout import Layout
from .weights import HeadWeights


def embedding_dim(N: int, eps: float, delta: float = 1e-3) -> int:
    """Dimension m at which a random sign set has all margins > eps with probability >= 1 - delta."""
    if not (isinstance(N, int) and N >= 1):
        raise ValueError(f"N={N!r} is invalid: expected an integer >= 1")
    if not 0 < eps < 1:
        raise ValueError(f"eps={eps!r} is invalid: expected a float in (0, 1)")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} is invalid: expected a float in (0, 1)")
    if N == 1:
        return 1
    return max(1, math.ceil(2 * math.log(N * N / (2 * delta)) / (1 - eps) ** 2))


def min_margin(P: np.ndarray, chunk: int = 2048) -> float:
    """min over i != j of p_i.p_i - p_i.p_j for p = P / sqrt(m) (chunked: fine for N = 10^4)."""
    N, m = P.shape
    if N == 1:
        return math.inf
    Pf = P.astype(np.float64)
    worst = math.inf
    for s in range(0, N, chunk):
        G = Pf[s:s + chunk] @ Pf.T                          # (chunk, N) integer Gram block
        own = G[np.arange(G.shape[0]), np.arange(s, s + G.shape[0])].copy()
        G[np.arange(G.shape[0]), np.arange(s, s + G.shape[0])] = -np.inf
        worst = min(worst, float(np.min(own - G.max(axis=1))))
    return worst / m


@functools.lru_cache(maxsize=64)
def quasi_orthogonal(N: int, eps: float = 0.5, seed: int = 0, delta: float = 1e-3,
                     max_draws: int = 20) -> np.ndarray:
    """N sign vectors (int8, N x m, read-only) whose normalised margins all exceed eps (Lemma A.1)."""
    m = embedding_dim(N, eps, delta)
    rng = np.random.default_rng(seed)
    for draw in range(max_draws):
        P = rng.choice(np.array([-1, 1], dtype=np.int8), size=(N, m))
        if min_margin(P) > eps:
            P.flags.writeable = False
            return P
        if draw % 4 == 3:
            m = math.ceil(m * 1.25)
    raise RuntimeError(f"no set of N={N} embeddings with margin > eps={eps} found in {max_draws} draws")


def pairing_head(layout: Layout, pos: str, value: np.ndarray, beta: float, name: str = "pairing",
                 silence: str | tuple[str, ...] = (), sink: str = "is_sink") -> HeadWeights:
    """Attend from each token to the tokens that share its embedding (register ``pos``), and move
    ``value`` (a D x D map) from them: output_j = mean_{i: p_i = p_j} value @ h_i + error.

    Error bound (the paper's "about n e^{-beta eps}"): a token with g group members and n keys puts
    weight <= e^{-beta eps} / g on each of the n - g others, so

        |output_j - mean_group| <= 2 (n - g) e^{-beta eps} / g * max_i |value @ h_i|.

    In floating point the bound falls to exactly zero once beta*eps passes the exp underflow
    threshold (about 745 in float64, 104 in float32): the other weights round to 0 and, with
    integer embeddings and beta/m a power of two, the group weights are exactly 1/g.

    ``silence``: tokens with one of these indicators attend to the sink instead (score 3 beta, which
    beats their own group by >= beta), so they receive the sink's value, exactly 0 where the value
    map reads rows that are 0 on the sink. Keeps copied registers off tokens that must not hold them.
    """
    m = layout.size(pos)
    silence = (silence,) if isinstance(silence, str) else tuple(silence)
    extra = 1 if silence else 0
    q = np.zeros((m + extra, layout.dim)); k = np.zeros((m + extra, layout.dim))
    q[:m, layout[pos]] = (beta / m) * np.eye(m)
    k[:m, layout[pos]] = np.eye(m)
    for row in silence:
        q[m, layout.row(row)] = 3 * beta
    if silence:
        k[m, layout.row(sink)] = 1.0
    return HeadWeights(q, k, value, name)


def pairing_error_bound(n: int, group: int, beta: float, eps: float, max_value: float) -> float:
    return 2.0 * (n - group) * math.exp(-beta * eps) / group * max_value


def exact_pairing_beta(m: int, eps: float, threshold: float = 800.0) -> float:
    """The smallest beta with beta/m a power of two and beta*eps >= threshold (weights underflow)."""
    return m * 2.0 ** math.ceil(math.log2(threshold / (eps * m)))
