"""The linearisation trick: a bilinear map out of softmax heads (used by Lemmas A.2, A.4, A.5, Thm 4.1).

Goal: at every query token j, output  sum_i V h_i (q_j . k_i)  with q_j = Q h_j, k_i = K h_i.
Softmax cannot do this directly. Heads h with data scores sigma_h c a_i (a_i = q_j . k_i, c small)
and value weights w_h / c are summed, with w solving  sum_h w_h sigma_h^p = [p == 1]  for
p = 0 .. H-1: the constant and every Taylor order of exp up to P cancel except the linear one.
The softmax denominator must then be made (nearly) the same in every head. Two schemes:

``sink`` (the paper's): a sink token gets key score C against every query (query row ``one`` = 1, key
   row ``is_sink`` = C), so e^C softmax_i = exp(s_i) / (1 + e^{-C} sum_k exp(s_k)) ~= exp(s_i); the
   values carry e^C. The value map must vanish on the sink (its value is multiplied by e^C).
``mirror`` (ours): no sink and no C. The key set is made symmetric (every key k_i has a partner -k_i;
   in the regression prompts the y-token of pair i carries the negated key, with a zero value), so
   sum_k exp(sigma c a_k) = sum_k cosh(c a_k) is *even* in sigma: the heads' denominators differ
   only at orders the moment conditions already cancel. Values carry n / c (n = number of keys).

Variants (``VARIANTS``: name -> (sigma_h, scheme)):
    paper               (1, 0)               sink     the printed constant cancel: error O(c)
    odd                 (1, -1)              sink     scores +ca / -ca: even orders cancel, O(c^2)
    richardson4         (1, -1, 2, -2)       sink     five-point central difference, O(c^4)
    richardson6         (1, -1, 2, -2, 3, -3) sink                                      O(c^6)
    richardson8/10/12   (+-1 .. +-4/5/6)     sink     8, 10, 12 heads                   O(c^8/10/12)
    odd+mirror, richardson4+mirror, .., richardson12+mirror: the same heads, mirror scheme

``sinh`` (ours, on top of mirror): the values are mirrored too (value -v_i with key -k_i). Every head
   is then odd by itself, f(c) = sum_i v_i sinh(c a_i) / mean_k cosh(c a_k): no constant mean(v) sits
   in its output, and the -sigma heads are redundant. Positive nodes with odd-moment weights
   (sum_h w_h sigma_h^{2q+1} = [q == 0], q < H) cancel orders c^2 .. c^{2H-1}: H heads, O(c^{2H}).
    sinh4               (1, 2)                sinh     2 heads (the paper's budget)     O(c^4)
    sinh8, sinh12       (1 .. 4), (1 .. 6)    sinh     4, 6 heads                        O(c^8), O(c^12)
   Besides the order, rounding falls: a zero-value mirror head returns mean(v) + O(theta) and loses
   ~u |mean v| / theta to rounding, a sinh head returns O(theta) and loses ~u |v| / sqrt(n) / theta.
   Needs the construction to hold -v on the mirror tokens (``gd`` does; ``bilinear_heads`` refuses
   otherwise). The bounds below hold with s_v the sum over one copy of the values.
   The mirror must be *exact*: a head's response to a symmetric part s of the values (the same value
   on k and -k) is its constant term, sum_h w_h n/(2c) mean(s) ~ s / c, so a symmetric rounding
   residue is multiplied by ~1/c every loop (measured: 1e27 after 20 loops at theta = 0.1). The GD
   construction therefore re-forms the mirror tokens exactly after every step (a pairing head, exact
   in floating point), at the price of a second layer in the loop.

More heads pay while the largest score max|sigma_h| theta stays inside the radius where the
softmax ratio is analytic (about pi/2: the mirror denominators mean cosh(z c a) first vanish at
|z c a| = pi/2): Newton in float64 reaches its 1e-11 target only with 10 heads (README table).

Error of one group at query j (theta = c max_i |a_i|, n keys, s_v = sum_i |V h_i|, u unit roundoff),
derived in ``error_bound`` below:
  sink    truncation <= s_v a_max K theta^P,   K = sum_h |w_h| |sigma_h|^{P+1} e^{|sigma_h| theta} / (P+1)!
          leakage    <= 2 n e^{-C} a_max s_v (1 + 2^{P+1} K theta^P) + (sum_h |w_h| e^{3|sigma_h|theta}) (n e^{-C})^2 s_v / c
          rounding   <= u (C + n + 8) (sum_h |w_h| e^{|sigma_h| theta}) s_v / c
  mirror  truncation <= (e / cos 1) s_v a_max sum_h |w_h| |sigma_h|^{P+1} theta^P / (1 - |sigma_h| theta)   (max|sigma_h| theta < 1)
          leakage    =  0
          rounding   <= u (n + 8) (sum_h |w_h| e^{|sigma_h| theta}) s_v / c
The rounding term sets the floor. With a sink the stable softmax forms exp(s_i - C) and resolves
s_i only to ulp(C): the mirror scheme removes that factor C (about 20-35 at the optimum), and the
leakage with it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .layout import Layout
from .weights import HeadWeights

_SIGMAS: dict[str, tuple[float, ...]] = {
    "paper": (1.0, 0.0),
    "odd": (1.0, -1.0),
    "richardson4": (1.0, -1.0, 2.0, -2.0),
    "richardson6": (1.0, -1.0, 2.0, -2.0, 3.0, -3.0),
    "richardson8": (1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0),
    "richardson10": (1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0, 5.0, -5.0),
    "richardson12": (1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0, 5.0, -5.0, 6.0, -6.0),
}
_SINH: dict[str, tuple[float, ...]] = {     # mirrored values: positive nodes only, order 2 x heads
    "sinh4": (1.0, 2.0),
    "sinh8": (1.0, 2.0, 3.0, 4.0),
    "sinh12": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
}
VARIANTS: dict[str, tuple[float, ...]] = {**_SIGMAS, **{f"{k}+mirror": v for k, v in _SIGMAS.items() if k != "paper"},
                                          **_SINH}
DEFAULT_VARIANT = "odd+mirror"  # the most accurate with the paper's two heads (see the README table)


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is invalid: expected one of {', '.join(VARIANTS)}")


def is_mirror(variant: str) -> bool:
    """No sink: the key set is symmetric (the ``+mirror`` and ``sinh`` variants)."""
    check_variant(variant)
    return variant.endswith("+mirror") or variant in _SINH


def odd_values(variant: str) -> bool:
    """The ``sinh`` variants: the values are mirrored with the keys, so every head is odd by itself."""
    check_variant(variant)
    return variant in _SINH


@functools.lru_cache(maxsize=None)
def _exact_weights(variant: str) -> tuple[Fraction, ...]:
    """w_h solving sum_h w_h sigma_h^p = [p == 1], p = 0 .. H-1, in exact rational arithmetic (a
    float solve of this Vandermonde system loses the moment conditions beyond ~10 heads)."""
    s = [Fraction(x).limit_denominator(10 ** 6) for x in VARIANTS[variant]]
    H = len(s)
    powers = [2 * q + 1 for q in range(H)] if variant in _SINH else list(range(H))   # sinh: odd moments
    A = [[s[h] ** p for h in range(H)] + [Fraction(int(p == 1))] for p in powers]
    for col in range(H):                                   # Gauss-Jordan, exact
        piv = next(r for r in range(col, H) if A[r][col] != 0)
        A[col], A[piv] = A[piv], A[col]
        A[col] = [a / A[col][col] for a in A[col]]
        for r in range(H):
            if r != col and A[r][col] != 0:
                f = A[r][col]
                A[r] = [a - f * b for a, b in zip(A[r], A[col])]
    return tuple(A[h][H] for h in range(H))


def head_weights(variant: str) -> np.ndarray:
    """w_h solving sum_h w_h sigma_h^p = [p == 1] for p = 0 .. H-1 (a Vandermonde system, solved
    exactly; +-sigma pairs come out as exact negatives, so heads whose scores are all 0 cancel)."""
    check_variant(variant)
    return np.array(_float_weights(variant))


@functools.lru_cache(maxsize=None)
def _float_weights(variant: str) -> tuple[float, ...]:
    return tuple(float(w) for w in _exact_weights(variant))


def order(variant: str) -> int:
    """P: the first Taylor order p >= 2 with sum_h w_h sigma_h^p != 0 is P + 1, error O(theta^P)
    (exact rational arithmetic, once per variant)."""
    check_variant(variant)
    return _order(variant)


@functools.lru_cache(maxsize=None)
def _order(variant: str) -> int:
    s = [Fraction(x).limit_denominator(10 ** 6) for x in VARIANTS[variant]]
    w = _exact_weights(variant)
    p = 2
    while variant in _SINH and p % 2 == 0 or sum(wh * sh ** p for wh, sh in zip(w, s)) == 0:
        p += 1          # sinh: even orders vanish in every head by itself (the head is odd)
    return p - 1


@dataclass(frozen=True)
class Temperature:
    """The sink score C (0 for the mirror scheme, which has no sink) and the data-score scale c."""
    C: float
    c: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.C) and self.C >= 0):
            raise ValueError(f"C={self.C!r} is invalid: expected a finite float >= 0")
        if not (math.isfinite(self.c) and self.c > 0):
            raise ValueError(f"c={self.c!r} is invalid: expected a finite float > 0")


def bilinear_heads(layout: Layout, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                   temp: Temperature, variant: str = DEFAULT_VARIANT, name: str = "bilinear",
                   n_keys: int | None = None, one: str = "one", sink: str = "is_sink",
                   mirrored_values: bool = False) -> tuple[HeadWeights, ...]:
    """Heads whose summed output at token j is ~= sum_i value @ h_i * (query @ h_j).(key @ h_i).

    query, key: (k, D) maps; value: (D, D). Each head's query is sigma_h c query. Sink scheme: an
    extra query row reads ``one`` and meets C on ``sink``; the sum runs over non-sink keys and the
    values carry e^C / c. Mirror scheme: the key set must be symmetric (k and -k), ``n_keys`` is the
    number of keys every query sees, and the values carry n_keys / c. ``mirrored_values``: the token
    with key -k_i also has value -v_i (the sum over i then counts every sample twice, so the value
    weights are halved); the ``sinh`` variants need it, every other variant allows it.
    """
    mirror = is_mirror(variant)
    if odd_values(variant) and not mirrored_values:
        raise ValueError(f"variant={variant!r} is invalid here: the sinh variants need mirrored values "
                         "(the token with key -k_i must hold value -v_i); this construction does not provide them")
    if mirror and not (isinstance(n_keys, int) and n_keys >= 1):
        raise ValueError(f"n_keys={n_keys!r} is invalid: the mirror scheme needs the number of keys (>= 1)")
    if not mirror and temp.C <= 0:
        raise ValueError(f"C={temp.C!r} is invalid: the sink scheme needs C > 0")
    k, D = query.shape
    scale = n_keys if mirror else (math.exp(temp.C) if temp.C < 709.0 else math.inf)  # inf: reported as overflow
    if mirrored_values:
        scale = scale / 2.0
    out = []
    for h, (sigma, w) in enumerate(zip(VARIANTS[variant], head_weights(variant))):
        rows = k if mirror else k + 1
        q = np.zeros((rows, D)); kk = np.zeros((rows, D))
        q[:k] = sigma * temp.c * query
        kk[:k] = key
        if not mirror:
            q[k, layout.row(one)] = 1.0
            kk[k, layout.row(sink)] = temp.C
        out.append(HeadWeights(q, kk, (w * scale / temp.c) * value, f"{name}[{h}]"))
    return tuple(out)


_MIRROR_G = math.e / math.cos(1.0)   # sup |numerator| / inf |mean cosh| on the Cauchy circle


def _terms(variant: str, theta, C, n: int, unit_roundoff: float):
    """Bound terms per unit a_max and unit s_v (numpy-broadcasting over theta and C)."""
    s, w = np.abs(np.array(VARIANTS[variant])), np.abs(head_weights(variant))
    P = order(variant)
    theta = np.asarray(theta, float)
    C = np.broadcast_to(np.asarray(C, float), np.broadcast_shapes(np.shape(C), theta.shape)) if not is_mirror(variant) \
        else np.zeros_like(theta)
    t = theta[..., None]
    inv_c = 1.0 / theta                         # 1/c in units of 1/a_max
    sum_we = np.sum(w * np.exp(s * t), -1)
    if is_mirror(variant):
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(s * t < 1, w * s ** (P + 1) / (1 - s * t), np.inf)
        trunc = _MIRROR_G * np.sum(per, -1) * theta ** P
        leak = np.zeros_like(theta)
        rnd = unit_roundoff * (n + 8) * sum_we * inv_c
        return trunc, leak, rnd
    K = np.sum(w * s ** (P + 1) * np.exp(s * t), -1) / math.factorial(P + 1)
    trunc = K * theta ** P
    leak = 2 * n * np.exp(-C) * (1 + 2 ** (P + 1) * K * theta ** P) \
        + np.sum(w * np.exp(3 * s * t), -1) * (n * np.exp(-C)) ** 2 * inv_c
    rnd = unit_roundoff * (C + n + 8) * sum_we * inv_c
    return trunc, leak, rnd


def error_bound(variant: str, temp: Temperature, n: int, a_max: float, sum_abs_v: float,
                unit_roundoff: float) -> dict[str, float]:
    """Bound on |output_j - sum_i V h_i a_i| for one query (the terms of the module docstring).

    Sink scheme. Write e^C softmax_i = exp(s_i) / D_h with D_h = 1 + delta_h, delta_h = e^{-C} sum_k
    exp(sigma_h c a_k) <= n e^{-C + |sigma_h| theta}. (i) With 1/D_h = 1: the Taylor remainder of
    sum_h w_h exp(sigma_h x) beyond its linear term is bounded termwise (Lagrange form) by K theta^{P+1};
    dividing by c gives a_max K theta^P per unit value. (ii) 1/D_h - 1 = -delta_h + r_h, |r_h| <=
    delta_h^2: the -delta_h part is e^{-C} sum_k sum_h (w_h / c) exp(sigma_h c (a_i + a_k)), again
    linear plus remainder: <= 2 n e^{-C} a_max (1 + 2^{P+1} K theta^P); the r_h part is bounded
    directly. (iii) Rounding: each exp argument s_i - C carries error <= u C, the n-term sums u n,
    the products a few u; every head's output has size <= |w_h| e^{|sigma_h|theta} s_v / c.

    Mirror scheme. The output is sum_h (w_h / c) g(sigma_h) with g(z) = sum_i v_i e^{z x_i} /
    mean_k cosh(z x_k), x = c a, analytic in z. On |z| = 1/theta, |numerator| <= s_v e and
    Re cosh(z x_k) >= cos 1, so Cauchy's estimate gives |g_p| <= (e / cos 1) s_v theta^p; the moment
    conditions remove p = 0 and 2..P, p = 1 is the wanted term, and the rest sums to the stated
    truncation. Rounding: as above without the u C term (the scores are O(theta), resolved to u).
    """
    check_variant(variant)
    trunc, leak, rnd = (float(t) * a_max * sum_abs_v
                        for t in _terms(variant, temp.c * a_max, temp.C, n, unit_roundoff))
    return {"truncation": trunc, "leakage": leak, "rounding": rnd, "total": trunc + leak + rnd}


def error_bound_total(variant: str, temp: Temperature, n: int, a_max, sum_abs_v, unit_roundoff: float) -> np.ndarray:
    """``error_bound(...)["total"]`` for arrays of a_max and sum_abs_v (one per problem, say); inf
    where the bound is not finite (a score beyond the mirror bound's radius, an overflow)."""
    check_variant(variant)
    a = np.asarray(a_max, float)
    with np.errstate(over="ignore", invalid="ignore"):
        trunc, leak, rnd = _terms(variant, temp.c * a, temp.C, n, unit_roundoff)
        total = (trunc + leak + rnd) * a * np.asarray(sum_abs_v, float)
    return np.where(np.isfinite(total), total, np.inf)


def estimate(variant: str, theta, C, n: int, unit_roundoff: float):
    """Leading-order *estimates* (not bounds) of the relative error terms, per unit a_max and s_v:
    truncation |sum_h w_h sigma_h^{P+1}| theta^P / (P+1)!, leakage 2 n e^{-C} (sink only), rounding
    u (C + 4) sum_h |w_h| / theta (sink) or 4 u sum_h |w_h| / theta (mirror). Used to choose the
    temperature; the worst-case ``error_bound`` is what the tests hold the emulation to."""
    s, w = np.array(VARIANTS[variant]), head_weights(variant)
    P = order(variant)
    theta = np.asarray(theta, float)
    trunc = abs(float(np.sum(w * s ** (P + 1)))) / math.factorial(P + 1) * theta ** P
    if is_mirror(variant):
        return trunc, np.zeros_like(theta), 4 * unit_roundoff * float(np.sum(np.abs(w))) / theta
    C = np.asarray(C, float)
    return trunc, 2 * n * np.exp(-C), unit_roundoff * (C + 4) * float(np.sum(np.abs(w))) / theta


def choose_temperature(variant: str, n: int, a_max: float, unit_roundoff: float,
                       log_max: float) -> Temperature:
    """Near-optimal (C, c) for one group: minimise the ``estimate`` of the relative error over a grid
    of theta = c a_max and C, keeping the value weights (e^C or n, over c) below exp(``log_max``)
    (the dtype's overflow limit less a margin).

    Sink scheme: C comes out as the smallest value that removes the leakage (a larger C only raises
    the rounding term u C / c); c is the best score size theta divided by a_max. Mirror: C = 0.
    """
    check_variant(variant)
    if not a_max > 0:
        raise ValueError(f"a_max={a_max!r} is invalid: expected a float > 0")
    theta = np.logspace(-8, 0, 321)[:, None]
    if is_mirror(variant):
        total = sum(estimate(variant, theta[:, 0], 0.0, n, unit_roundoff))
        total = np.where(math.log(n) - np.log(theta[:, 0] / a_max) > log_max, np.inf, total)
        i = int(np.argmin(total))
        return Temperature(0.0, float(theta[i, 0] / a_max))
    C = np.linspace(1.0, 700.0, 2797)[None, :]
    total = sum(estimate(variant, theta, C, n, unit_roundoff))
    total = np.where(C - np.log(theta / a_max) > log_max, np.inf, total)
    i, j = np.unravel_index(np.argmin(total), total.shape)
    if not np.isfinite(total[i, j]):
        raise ValueError(f"no temperature fits under the overflow limit exp({log_max:.0f})")
    return Temperature(float(C[0, j]), float(theta[i, 0] / a_max))
