"""Exact symbolic evaluation of constructed layers (Eq. 1), for the proofs in ``verify.symbolic``.

Weights. A construction is a numpy function of its parameters (C, c, eta, ...). ``identify`` calls
the real construction code at a few parameter points and writes every weight entry as a rational
number times one *family* monomial (1, c, C, e^C/c, eta e^C/c): the project's own weights, with
their parameters made symbolic. An entry that fits no family raises ``ProofError``.

Series. With eps = e^{-C}, one head's output at query j is (Eq. 1, softmax over the keys i)

    sum_i eps^{M - m_i} E_i V_i / sum_k eps^{M - m_k} E_k,   s_ji = m_i C + c a_i,  E_i = exp(c a_i),

M = max_i m_i. Every quantity is a truncated bivariate Laurent series in (eps, c), a dict
{(e, p): coefficient of eps^e c^p}, with coefficients in QQ[data symbols] (sympy's sparse polynomial
ring, so no floating point anywhere): exp(c a) = sum_p (c a)^p / p!, and the denominator, whose
constant term #{k: m_k = M} is a nonzero integer, is inverted as a geometric series. Truncation is
exact: every coefficient kept is the true Taylor coefficient of the layer's output.

Selection heads (pairing, copy, mirror: scores independent of the data, values of family 1) are
analysed exactly instead: with the scores scaled by lambda, every softmax weight is a power of
u = e^{lambda G} (G the gcd of the score gaps), and sympy cancels the identity
out - mean_G = sum_{i not in G} t_i (v_i - mean_G) / (g + sum t), t_i = e^{-lambda gap_i} -> 0.

FFN. Eq. 1's ReLU FFN is applied exactly on each token under the construction's declared bound: a
unit whose pre-activation has a negative constant part -B (an indicator times a bound) is off,
assuming the data part stays within B; units with no constant part must come in pairs
relu(u) - relu(-u) = u with opposite output columns, which is exact. Anything else raises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np
import sympy as sp
from sympy import QQ

Series = dict          # {(e, p): PolyElement}: sum eps^e c^p coefficient


class ProofError(Exception):
    """The symbolic evaluation cannot proceed (weights not of the assumed form): the proof fails."""


# -- identification of the weights' dependence on their parameters ----------------------------

FAMILIES: dict[str, Callable[[dict], float]] = {
    "1": lambda p: 1.0,
    "c": lambda p: p["c"],
    "C": lambda p: p["C"],
    "e^C/c": lambda p: math.exp(p["C"]) / p["c"],
    "e^C": lambda p: math.exp(p["C"]),
    "eta e^C/c": lambda p: p["eta"] * math.exp(p["C"]) / p["c"],
    "eta/c": lambda p: p["eta"] / p["c"],
    "1/c": lambda p: 1.0 / p["c"],
    "beta": lambda p: p["beta"],
}
POINTS = ({"C": 1.0, "c": 1.0, "eta": 1.0, "beta": 1.0},
          {"C": 1.5, "c": 0.5, "eta": 0.7, "beta": 2.0},
          {"C": 2.25, "c": 0.3, "eta": 0.3, "beta": 3.5})


def rational(v: float, what: str) -> Fraction:
    f = Fraction(v).limit_denominator(10 ** 6)
    if abs(float(f) - v) > 1e-9 * max(1.0, abs(v)):
        raise ProofError(f"{what}: {v!r} is not a small rational")
    return f


def identify_arrays(samples: list[np.ndarray], families: tuple[str, ...], what: str,
                    points=POINTS) -> dict[str, np.ndarray]:
    """Entries of one weight array sampled at ``points`` -> {family: rational coefficient array}."""
    out = {f: np.full(samples[0].shape, Fraction(0), dtype=object) for f in families}
    for idx in zip(*np.nonzero(np.any([s != 0 for s in samples], axis=0))):
        vals = [float(s[idx]) for s in samples]
        for f in families:
            fv = [FAMILIES[f](p) for p in points]
            a = vals[0] / fv[0]
            if all(abs(a * x - v) <= 1e-10 * max(1.0, abs(v)) for x, v in zip(fv, vals)):
                out[f][idx] = rational(a, f"{what}{list(idx)}")
                break
        else:
            raise ProofError(f"{what}{list(idx)} = {vals} fits none of the families {families}")
    return {f: a for f, a in out.items() if any(x != 0 for x in a.flat)}


@dataclass(frozen=True)
class SymHead:
    query: dict
    key: dict
    value: dict
    name: str


@dataclass(frozen=True)
class SymLayer:
    heads: tuple[SymHead, ...]
    ffn: tuple | None            # (w1, b1, w2, b2) rational object arrays, or None
    mask: str
    name: str


def identify_layer(build: Callable[[dict], object], families: tuple[str, ...], points=POINTS) -> SymLayer:
    """``build(params) -> LayerWeights`` of the real construction, made symbolic (see module doc)."""
    layers = [build(p) for p in points]
    heads = []
    for h, hs in enumerate(zip(*(lay.heads for lay in layers))):
        parts = {a: identify_arrays([getattr(x, a) for x in hs], families, f"{hs[0].name}.{a}", points)
                 for a in ("query", "key", "value")}
        heads.append(SymHead(name=hs[0].name, **parts))
    ffn = None
    if layers[0].ffn is not None:
        ffn = tuple(identify_arrays([getattr(l.ffn, a) for l in layers], ("1",), f"ffn.{a}", points).get(
            "1", np.full(getattr(layers[0].ffn, a).shape, Fraction(0), dtype=object))
            for a in ("w1", "b1", "w2", "b2"))
    return SymLayer(tuple(heads), ffn, layers[0].mask, layers[0].name)


# -- truncated bivariate series --------------------------------------------------------------------

def q(f: Fraction):
    return QQ(f.numerator, f.denominator)


def s_add(a: Series, b: Series) -> Series:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return {k: v for k, v in out.items() if v != 0}


def s_mul(a: Series, b: Series, emax: int, pmax: int) -> Series:
    out: Series = {}
    for (e1, p1), x in a.items():
        for (e2, p2), y in b.items():
            k = (e1 + e2, p1 + p2)
            if k[0] <= emax and k[1] <= pmax:
                out[k] = out[k] + x * y if k in out else x * y
    return {k: v for k, v in out.items() if v != 0}


def s_inv(a: Series, emax: int, pmax: int) -> Series:
    """1 / a for a power series whose constant term is a nonzero number: b_0 = 1 / a_0 and
    b_k = -(1 / a_0) sum_{0 < l <= k} a_l b_{k-l}, over (e, p) in lexicographic order."""
    a0 = a.get((0, 0))
    if a0 is None or not a0.is_ground or any(e < 0 or p < 0 for e, p in a):
        raise ProofError("softmax denominator has no nonzero constant leading term")
    inv0 = QQ(1) / a0.LC
    terms = [(k, v) for k, v in a.items() if k != (0, 0)]
    out: Series = {(0, 0): a0.ring.one * inv0}
    for e in range(emax + 1):
        for p in range(pmax + 1):
            if (e, p) == (0, 0):
                continue
            acc = a0.ring.zero
            for (e1, p1), v in terms:
                b = out.get((e - e1, p - p1))
                if b is not None:
                    acc = acc + v * b
            if acc != 0:
                out[(e, p)] = -acc * inv0
    return out


def s_exp_c(a, e: int, pmax: int) -> Series:
    """eps^e exp(c a) to order c^pmax."""
    out, term = {}, a.ring.one
    for p in range(pmax + 1):
        if term != 0:
            out[(e, p)] = term * QQ(1, math.factorial(p))
        term = term * a
    return out


# -- Eq. 1 on symbolic tokens ---------------------------------------------------------------------

def sparse(W: np.ndarray) -> tuple:
    """Rows of a rational object array as ((col, QQ), ...) tuples, cached on the array's identity."""
    key = id(W)
    hit = _SPARSE.get(key)
    if hit is not None and hit[0] is W:
        return hit[1]
    rows = tuple(tuple((int(c), q(row[c])) for c in np.flatnonzero([x != 0 for x in row])) for row in W)
    _SPARSE[key] = (W, rows)
    return rows


_SPARSE: dict = {}


def matvec(W: np.ndarray, h: list) -> list:
    zero = h[0].ring.zero
    out = []
    for row in sparse(W):
        acc = zero
        for col, v in row:
            if h[col] != 0:
                acc = acc + h[col] * v
        out.append(acc)
    return out


def dot(u: list, v: list):
    return sum((a * b for a, b in zip(u, v)), u[0].ring.zero if u else 0)


VALUE_SHIFT = {"1": (0, 0), "c": (0, 1), "e^C/c": (-1, -1), "eta e^C/c": (-1, -1), "e^C": (-1, 0),
               "eta/c": (0, -1), "1/c": (0, -1)}


def score(head: SymHead, hj: list, hi: list, ring) -> tuple[int, object]:
    """s = m C + c a: returns (m, a); anything else raises."""
    qs = {f: matvec(W, hj) for f, W in head.query.items()}
    ks = {g: matvec(W, hi) for g, W in head.key.items()}
    m, a = 0, ring.zero
    for f, qv in qs.items():
        for g, kv in ks.items():
            s = dot(qv, kv)
            if s == 0:
                continue
            pair = {f, g}
            if pair == {"1", "c"}:
                a = a + s
            elif pair == {"1", "C"} and s.is_ground and s.LC.denominator == 1:
                m += int(s.LC)
            else:
                raise ProofError(f"head {head.name}: score term {f}*{g} = {s.as_expr()} is not m C + c a")
    return m, a


def values(head: SymHead, hi: list, symbols: dict) -> dict[int, Series]:
    """Row -> series of the head's value at key token hi."""
    out: dict[int, Series] = {}
    for f, W in head.value.items():
        if f not in VALUE_SHIFT:
            raise ProofError(f"head {head.name}: value family {f} is not supported")
        coef = symbols["eta"] if f.startswith("eta") else None
        for r, v in enumerate(matvec(W, hi)):
            if v != 0:
                out[r] = s_add(out.get(r, {}), {VALUE_SHIFT[f]: v * coef if coef is not None else v})
    return out


def head_output(head: SymHead, h: list[list], j: int, keys: range, symbols: dict, emax: int,
                pmax: int) -> dict[int, Series]:
    ring = h[0][0].ring
    ms, As = zip(*(score(head, h[j], h[i], ring) for i in keys))
    vals = [values(head, h[i], symbols) for i in keys]
    e0 = min([k[0] for v in vals for s in v.values() for k in s] + [0])
    p0 = min([k[1] for v in vals for s in v.values() for k in s] + [0])
    we, wp = emax - e0, pmax - p0
    M = max(ms)
    E = [s_exp_c(a, M - m, wp) for m, a in zip(ms, As)]
    inv = s_inv(
        {k: v for k, v in s_add_all(E).items() if k[0] <= we}, we, wp)
    out: dict[int, Series] = {}
    for Ei, Vi in zip(E, vals):
        if not Vi:
            continue
        wi = s_mul(Ei, inv, we, wp)
        for r, s in Vi.items():
            out[r] = s_add(out.get(r, {}), s_mul(wi, s, emax, pmax))
    return out


def s_add_all(parts) -> Series:
    out: Series = {}
    for p in parts:
        out = s_add(out, p)
    return out


def apply_attention(layer: SymLayer, h: list[list], symbols: dict, emax: int, pmax: int) -> list[list[Series]]:
    """Residual attention of Eq. 1 on symbolic tokens: per token, per row, a series in (eps, c)."""
    n = len(h)
    out = [[({(0, 0): v} if v != 0 else {}) for v in tok] for tok in h]
    for head in layer.heads:
        for j in range(n):
            keys = range(j + 1) if layer.mask == "causal" else range(n)
            for r, s in head_output(head, h, j, keys, symbols, emax, pmax).items():
                out[j][r] = s_add(out[j][r], s)
    return out


def apply_ffn(ffn: tuple, tok: list[Series], ring, assumptions: list[str], where: str) -> list[Series]:
    """Residual FFN on one token, exact under the bounds it declares (appended to ``assumptions``)."""
    w1, b1, w2, b2 = ffn
    D = len(tok)
    pre = []
    for k in range(w1.shape[0]):
        u: Series = {}
        for col in np.flatnonzero([x != 0 for x in w1[k]]):
            u = s_add(u, {key: v * q(w1[k, col]) for key, v in tok[col].items()})
        pre.append(u)
    const = []
    for k, u in enumerate(pre):
        c0 = u[(0, 0)].get(ring.zero_monom, QQ(0)) if (0, 0) in u else QQ(0)
        const.append(Fraction(int(c0.numerator), int(c0.denominator)) + b1[k])
    out = [dict(s) for s in tok]
    used = set()
    for k, u in enumerate(pre):
        data = {key: (v - v.get(ring.zero_monom, QQ(0)) if key == (0, 0) else v) for key, v in u.items()}
        data = {key: v for key, v in data.items() if v != 0}
        if k in used:
            continue
        if not data:                                  # a number: relu evaluated exactly
            if const[k] > 0:
                for r in range(D):
                    if w2[r, k] != 0:
                        out[r] = s_add(out[r], {(0, 0): ring.one * q(w2[r, k] * const[k])})
            continue
        if const[k] < 0:
            assumptions.append(f"{where}: ffn unit {k} off (its data part stays below {float(-const[k]):g})")
            continue
        if const[k] > 0:
            raise ProofError(f"{where}: ffn unit {k} has data and a positive constant part")
        neg = {key: -v for key, v in data.items()}
        partner = next((k2 for k2 in range(w1.shape[0]) if k2 != k and k2 not in used and const[k2] == 0
                        and pre[k2] == neg and all(w2[r, k2] == -w2[r, k] for r in range(D))), None)
        if partner is None:
            raise ProofError(f"{where}: ffn unit {k} is active with no relu(u) - relu(-u) partner")
        used |= {k, partner}
        for r in range(D):
            if w2[r, k] != 0:
                out[r] = s_add(out[r], {key: v * q(w2[r, k]) for key, v in data.items()})
    for r in range(D):
        if b2[r] != 0:
            out[r] = s_add(out[r], {(0, 0): ring.one * q(b2[r])})
    return out


def apply_layer(layer: SymLayer, h: list[list], symbols: dict, emax: int, pmax: int,
                assumptions: list[str]) -> list[list[Series]]:
    out = apply_attention(layer, h, symbols, emax, pmax)
    if layer.ffn is not None:
        ring = h[0][0].ring
        out = [apply_ffn(layer.ffn, tok, ring, assumptions, f"token {j}") for j, tok in enumerate(out)]
    return out


# -- selection heads in the limit beta -> oo (Lemma A.1 pairing, Lemma A.3 copy) -------------------

def is_selection(head: SymHead) -> bool:
    """Scores independent of c and C, values of family 1: a head that selects, not a linearised one."""
    return set(head.query) <= {"1", "beta"} and set(head.key) <= {"1"} and set(head.value) <= {"1"}


@dataclass(frozen=True)
class Selection:
    """One query of a selection head, its scores lambda * kappa_i scaled by lambda (lambda = beta for a
    head built with symbolic beta; otherwise lambda = 1 is the construction, and every query entry of
    a pairing/copy head being proportional to its beta, lambda = beta / beta_0): the group G = argmax
    kappa, the gaps K - kappa_i of the other keys, and the limit lambda -> oo (the group's mean)."""
    group: tuple[int, ...]
    gaps: dict
    limit: dict                  # row -> PolyElement
    identity: bool               # out - limit == sum_{i not in G} t_i (v_i - limit) / (g + sum t), t_i = e^{-lambda gap_i}
    tends: bool                  # every gap > 0, so with the identity out -> limit as lambda -> oo


def selection(head: SymHead, h: list[list], j: int, keys) -> Selection:
    """Exact analysis of one query: with u = e^{lambda G} (G the gcd of the gaps) every softmax weight
    is a power of u and every output row a rational function of u, which sympy cancels exactly."""
    ring = h[0][0].ring
    keys = list(keys)
    kap = []
    qs = {f: matvec(Wq, h[j]) for f, Wq in head.query.items()}
    for i in keys:
        k = Fraction(0)
        for f, qv in qs.items():
            for g, Wk in head.key.items():
                s = dot(qv, matvec(Wk, h[i]))
                if s == 0:
                    continue
                if not s.is_ground:
                    raise ProofError(f"head {head.name}: score {s.as_expr()} depends on the data")
                k += Fraction(int(s.LC.numerator), int(s.LC.denominator))
        kap.append(k)
    vals = [matvec(head.value["1"], h[i]) for i in keys] if "1" in head.value else None
    K = max(kap)
    G = tuple(i for i, k in zip(keys, kap) if k == K)
    gaps = {i: K - k for i, k in zip(keys, kap) if k != K}
    unit = Fraction(math.gcd(*(x.numerator for x in gaps.values())), math.lcm(*(x.denominator for x in gaps.values()))) \
        if gaps else Fraction(1)
    u = sp.Symbol("u", positive=True)
    powers = {i: u ** -int((K - k) / unit) for i, k in zip(keys, kap)}
    limit, identity, tends = {}, True, True
    rows = [r for r in range(len(h[0])) if vals and any(v[r] != 0 for v in vals)]
    for r in rows:
        lim = sum((vals[keys.index(i)][r] for i in G), ring.zero) * QQ(1, len(G))
        limit[r] = lim
        out = sum(powers[i] * vals[n][r].as_expr() for n, i in enumerate(keys)) / sum(powers.values())
        rhs = sum(powers[i] * (vals[keys.index(i)][r].as_expr() - lim.as_expr()) for i in gaps)
        identity &= sp.cancel((out - lim.as_expr()) * (len(G) + sum(powers[i] for i in gaps)) - rhs) == 0
    tends = all(g > 0 for g in gaps.values())      # so t_i = u^{-gap_i/G} -> 0 and out -> limit
    return Selection(G, gaps, limit, identity, tends)


def leading_layer(layer: SymLayer, h: list[list], symbols: dict, assumptions: list[str]) -> tuple[list[list], list[str], object]:
    """One layer at leading order: selection heads in the limit lambda -> oo (checked exactly by
    ``selection``), linearised heads at eps^0 c^0 (no eps^-1 or c^-1 term allowed), then the FFN.
    Returns (state, problems, smallest gap of the selection heads)."""
    ring = h[0][0].ring
    n = len(h)
    bad, gap = [], None
    out = [[({(0, 0): v} if v != 0 else {}) for v in tok] for tok in h]
    sel = [hd for hd in layer.heads if is_selection(hd)]
    lin = SymLayer(tuple(hd for hd in layer.heads if not is_selection(hd)), None, layer.mask, layer.name)
    for head in sel:
        for j in range(n):
            keys = range(j + 1) if layer.mask == "causal" else range(n)
            s = selection(head, h, j, keys)
            if not (s.identity and s.tends):
                bad.append(f"{head.name} query {j}: remainder identity {s.identity}, limit {s.tends}")
            if s.gaps:
                g = min(s.gaps.values())
                gap = g if gap is None else min(gap, g)
            for r, v in s.limit.items():
                out[j][r] = s_add(out[j][r], {(0, 0): v})
    if lin.heads:
        att = apply_attention(lin, h, symbols, 0, 0)
        for j in range(n):
            for r, sr in enumerate(att[j]):
                extra = {k: v for k, v in s_add(sr, {(0, 0): -h[j][r]} if h[j][r] != 0 else {}).items()}
                for k, v in extra.items():
                    if k != (0, 0):
                        bad.append(f"{layer.name} token {j} row {r}: eps^{k[0]} c^{k[1]} term")
                out[j][r] = s_add(out[j][r], {(0, 0): extra[(0, 0)]} if (0, 0) in extra else {})
    if layer.ffn is not None:
        out = [apply_ffn(layer.ffn, tok, ring, assumptions, f"{layer.name} token {j}") for j, tok in enumerate(out)]
    return [[s.get((0, 0), ring.zero) for s in tok] for tok in out], bad, gap
