"""The linearisation trick: a bilinear map out of softmax heads (used by Lemmas A.2, A.4, A.5, Thm 4.1).

Goal: at every query token j, output  sum_i V h_i (q_j . k_i)  with q_j = Q h_j, k_i = K h_i,
summed over every non-sink key i. Softmax cannot do this directly; the paper's trick:

1. A *sink* token gets key score C against every query (query row ``one`` = 1, key row ``sink`` = C),
   so for every other key  e^C softmax_i = exp(s_i) / (1 + e^{-C} sum_k exp(s_k)) ~= exp(s_i).
2. Data scores are made small: s_i = sigma * c * a_i with a_i = q_j . k_i, so exp(s_i) ~= 1 + sigma c a_i.
3. Several heads h with score multipliers sigma_h and value weights w_h e^C / c are summed. Choosing
   w to solve  sum_h w_h sigma_h^p = [p == 1]  for p = 0 .. P  cancels the constant (the e^C sum of
   values) and every Taylor term of exp up to order P except the linear one.

Variants (``VARIANTS``: name -> sigma_h):
    paper        (1, 0)              the printed two-head constant cancel: error O(c)
    odd          (1, -1)             same two heads, scores +ca / -ca: even orders cancel, O(c^2)
    richardson4  (1, -1, 2, -2)      five-point central difference, O(c^4)
    richardson6  (1, -1, 2, -2, 3, -3)                                O(c^6)

Requirement: the value map must vanish on the sink token (its value is multiplied by e^C).

Error of one group at query j (theta = c max_i |a_i|, n keys, s_v = sum_i |V h_i|, u unit roundoff),
derived in ``error_bound`` below:
    truncation  <= s_v a_max K theta^P               K = sum_h |w_h| |sigma_h|^{P+1} e^{|sigma_h| theta} / (P+1)!
    leakage     <= 2 n e^{-C} a_max s_v (1 + 2^{P+1} K theta^P) + (sum_h |w_h| e^{3|sigma_h|theta}) (n e^{-C})^2 s_v / c
    rounding    <= u (C + n + 8) (sum_h |w_h| e^{|sigma_h| theta}) s_v / c
The rounding term is the floor: the stable softmax forms exp(s_i - C), resolving s_i only to ulp(C),
and the heads' difference of size c is divided by c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import Layout
from .weights import HeadWeights

VARIANTS: dict[str, tuple[float, ...]] = {
    "paper": (1.0, 0.0),
    "odd": (1.0, -1.0),
    "richardson4": (1.0, -1.0, 2.0, -2.0),
    "richardson6": (1.0, -1.0, 2.0, -2.0, 3.0, -3.0),
}
DEFAULT_VARIANT = "odd"  # most accurate with the paper's two heads


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is invalid: expected one of {', '.join(VARIANTS)}")


def head_weights(variant: str) -> np.ndarray:
    """w_h solving sum_h w_h sigma_h^p = [p == 1] for p = 0 .. H-1 (a Vandermonde system)."""
    check_variant(variant)
    s = np.array(VARIANTS[variant])
    V = np.vander(s, increasing=True).T          # V[p, h] = sigma_h^p
    rhs = np.zeros(len(s)); rhs[1] = 1.0
    w = np.linalg.solve(V, rhs)
    for h in range(len(s)):                      # make +-sigma pairs exact negatives, so that heads
        mirror = np.flatnonzero(s == -s[h])      # whose scores are all 0 cancel exactly
        if s[h] > 0 and mirror.size:
            w[mirror[0]] = -w[h]
    return w


def order(variant: str) -> int:
    """P: the first Taylor order p >= 2 with sum_h w_h sigma_h^p != 0 is P + 1, error O(theta^P)."""
    s, w = np.array(VARIANTS[variant]), head_weights(variant)
    p = 2
    while abs(float(np.sum(w * s ** p))) < 1e-9:
        p += 1
    return p - 1


@dataclass(frozen=True)
class Temperature:
    """The sink score C and the data-score scale c of one linearised head group."""
    C: float
    c: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C={self.C!r} is invalid: expected a finite float > 0")
        if not (math.isfinite(self.c) and self.c > 0):
            raise ValueError(f"c={self.c!r} is invalid: expected a finite float > 0")


def bilinear_heads(layout: Layout, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                   temp: Temperature, variant: str = DEFAULT_VARIANT, name: str = "bilinear",
                   one: str = "one", sink: str = "is_sink") -> tuple[HeadWeights, ...]:
    """Heads whose summed output at token j is ~= sum_{i != sink} value @ h_i * (query @ h_j).(key @ h_i).

    query, key: (k, D) maps; value: (D, D). The data part of each head's query is sigma_h c query; an
    extra query row reads ``one`` and the matching key row is C on ``sink``.
    """
    check_variant(variant)
    k, D = query.shape
    out = []
    for h, (sigma, w) in enumerate(zip(VARIANTS[variant], head_weights(variant))):
        q = np.zeros((k + 1, D)); kk = np.zeros((k + 1, D))
        q[:k] = sigma * temp.c * query
        kk[:k] = key
        q[k, layout.row(one)] = 1.0
        kk[k, layout.row(sink)] = temp.C
        out.append(HeadWeights(q, kk, (w * math.exp(temp.C) / temp.c) * value, f"{name}[{h}]"))
    return tuple(out)


def _terms(variant: str, theta, C, n: int, unit_roundoff: float):
    """Bound terms per unit a_max and unit s_v (numpy-broadcasting over theta and C)."""
    s, w = np.abs(np.array(VARIANTS[variant])), np.abs(head_weights(variant))
    P = order(variant)
    theta, C = np.asarray(theta, float)[..., None], np.asarray(C, float)[..., None]
    K = np.sum(w * s ** (P + 1) * np.exp(s * theta), -1) / math.factorial(P + 1)
    theta, C = theta[..., 0], C[..., 0]
    inv_c = 1.0 / theta                         # 1/c in units of 1/a_max
    trunc = K * theta ** P
    leak = 2 * n * np.exp(-C) * (1 + 2 ** (P + 1) * K * theta ** P) \
        + np.sum(w * np.exp(3 * s * theta[..., None]), -1) * (n * np.exp(-C)) ** 2 * inv_c
    rnd = unit_roundoff * (C + n + 8) * np.sum(w * np.exp(s * theta[..., None]), -1) * inv_c
    return trunc, leak, rnd


def error_bound(variant: str, temp: Temperature, n: int, a_max: float, sum_abs_v: float,
                unit_roundoff: float) -> dict[str, float]:
    """Bound on |output_j - sum_i V h_i a_i| for one query (the terms of the module docstring).

    Derivation. Write e^C softmax_i = exp(s_i) / D_h with D_h = 1 + delta_h, delta_h = e^{-C} sum_k
    exp(sigma_h c a_k) <= n e^{-C + |sigma_h| theta}. Then (i) with 1/D_h = 1: the Taylor remainder of
    sum_h w_h exp(sigma_h x) beyond its linear term is bounded termwise (Lagrange form) by K theta^{P+1};
    dividing by c gives a_max K theta^P per unit value. (ii) 1/D_h - 1 = -delta_h + r_h, |r_h| <=
    delta_h^2: the -delta_h part is e^{-C} sum_k sum_h (w_h / c) exp(sigma_h c (a_i + a_k)), again
    linear plus remainder: <= 2 n e^{-C} a_max (1 + 2^{P+1} K theta^P); the r_h part is bounded
    directly. (iii) Rounding: each exp argument s_i - C carries error <= u C, the n-term sums u n,
    the products a few u; every head's output has size <= |w_h| e^{|sigma_h|theta} s_v / c.
    """
    check_variant(variant)
    trunc, leak, rnd = (float(t) * a_max * sum_abs_v
                        for t in _terms(variant, temp.c * a_max, temp.C, n, unit_roundoff))
    return {"truncation": trunc, "leakage": leak, "rounding": rnd, "total": trunc + leak + rnd}


def choose_temperature(variant: str, n: int, a_max: float, unit_roundoff: float,
                       log_max: float) -> Temperature:
    """Near-optimal (C, c) for one group: minimise the relative bound of ``error_bound`` over a grid
    of theta = c a_max and C, keeping C + ln(1/c) below ``log_max`` (the dtype's overflow limit less
    a margin: the value weights are e^C / c times the data).

    C comes out as the smallest value that removes the leakage (a larger C only raises the rounding
    term u C / c); c is the best score size theta divided by a_max.
    """
    check_variant(variant)
    if not a_max > 0:
        raise ValueError(f"a_max={a_max!r} is invalid: expected a float > 0")
    theta = np.logspace(-8, 0, 321)[:, None]
    C = np.linspace(1.0, 700.0, 2797)[None, :]
    total = sum(_terms(variant, theta, C, n, unit_roundoff))
    total = np.where(C - np.log(theta / a_max) > log_max, np.inf, total)
    i, j = np.unravel_index(np.argmin(total), total.shape)
    if not np.isfinite(total[i, j]):
        raise ValueError(f"no temperature fits under the overflow limit exp({log_max:.0f})")
    return Temperature(float(C[0, j]), float(theta[i, 0] / a_max))
