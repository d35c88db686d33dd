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


def identify_arrays(samples: list[np.ndarray], families: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Entries of one weight array sampled at ``POINTS`` -> {family: rational coefficient array}."""
    out = {f: np.full(samples[0].shape, Fraction(0), dtype=object) for f in families}
    for idx in zip(*np.nonzero(np.any([s != 0 for s in samples], axis=0))):
        vals = [float(s[idx]) for s in samples]
        for f in families:
            fv = [FAMILIES[f](p) for p in POINTS]
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


def identify_layer(build: Callable[[dict], object], families: tuple[str, ...]) -> SymLayer:
    """``build(params) -> LayerWeights`` of the real construction, made symbolic (see module doc)."""
    layers = [build(p) for p in POINTS]
    heads = []
    for h, hs in enumerate(zip(*(lay.heads for lay in layers))):
        parts = {a: identify_arrays([getattr(x, a) for x in hs], families, f"{hs[0].name}.{a}")
                 for a in ("query", "key", "value")}
        heads.append(SymHead(name=hs[0].name, **parts))
    ffn = None
    if layers[0].ffn is not None:
        ffn = tuple(identify_arrays([getattr(l.ffn, a) for l in layers], ("1",), f"ffn.{a}").get(
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
    """1 / a for a power series whose constant term is a nonzero number."""
    a0 = a.get((0, 0))
    if a0 is None or not a0.is_ground or any(e < 0 or p < 0 for e, p in a):
        raise ProofError("softmax denominator has no nonzero constant leading term")
    inv0 = QQ(1) / a0.LC
    u = {k: -v * inv0 for k, v in a.items() if k != (0, 0)}
    one = {(0, 0): a0.ring.one}
    out, term = dict(one), dict(one)
    for _ in range(emax + pmax):
        term = s_mul(term, u, emax, pmax)
        out = s_add(out, term)
    return {k: v * inv0 for k, v in out.items()}


def s_exp_c(a, e: int, pmax: int) -> Series:
    """eps^e exp(c a) to order c^pmax."""
    out, term = {}, a.ring.one
    for p in range(pmax + 1):
        if term != 0:
            out[(e, p)] = term * QQ(1, math.factorial(p))
        term = term * a
    return out


# -- Eq. 1 on symbolic tokens ---------------------------------------------------------------------

def matvec(W: np.ndarray, h: list) -> list:
    zero = h[0].ring.zero
    out = []
    for row in W:
        acc = zero
        for col in np.flatnonzero([x != 0 for x in row]):
            acc = acc + h[col] * q(row[col])
        out.append(acc)
    return out


def dot(u: list, v: list):
    return sum((a * b for a, b in zip(u, v)), u[0].ring.zero if u else 0)


VALUE_SHIFT = {"1": (0, 0), "c": (0, 1), "e^C/c": (-1, -1), "eta e^C/c": (-1, -1), "e^C": (-1, 0)}


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

@dataclass(frozen=True)
class Selection:
    """One query of a head with scores beta * kappa_i: its group G = argmax kappa, the gaps
    K - kappa_i of the other keys, and the limit (mean of the group's values)."""
    group: tuple[int, ...]
    gaps: dict
    limit: dict                  # row -> PolyElement
    identity: bool               # out - limit == sum_{i not in G} t_i (v_i - limit) / (g + sum t)
    tends: bool                  # sympy limit(out, beta -> oo) == limit, row by row


def selection(head: SymHead, h: list[list], j: int, keys) -> Selection:
    """Exact analysis of one query: Eq. 1's softmax with u = e^{beta / L} (L a common denominator of
    the kappas), so every weight is a power of u and every output row a rational function of u."""
    ring = h[0][0].ring
    kap = []
    for i in keys:
        k = Fraction(0)
        for f, Wq in head.query.items():
            for g, Wk in head.key.items():
                s = dot(matvec(Wq, h[j]), matvec(Wk, h[i]))
                if s == 0:
                    continue
                if {f, g} != {"beta", "1"} or not s.is_ground:
                    raise ProofError(f"head {head.name}: score {f}*{g} = {s.as_expr()} is not beta * number")
                k += Fraction(int(s.LC.numerator), int(s.LC.denominator))
        kap.append(k)
    if set(head.value) - {"1"}:
        raise ProofError(f"head {head.name}: value depends on {set(head.value)}")
    vals = [matvec(head.value["1"], h[i]) for i in keys]
    K = max(kap)
    G = tuple(i for i, k in zip(keys, kap) if k == K)
    gaps = {i: K - k for i, k in zip(keys, kap) if k != K}
    L = math.lcm(*(x.denominator for x in kap))
    u = sp.Symbol("u", positive=True)
    powers = {i: u ** int((k - K) * L) for i, k in zip(keys, kap)}
    limit, identity, tends = {}, True, True
    rows = [r for r in range(len(vals[0])) if any(v[r] != 0 for v in vals)]
    for r in rows:
        lim = sum((vals[keys.index(i)][r] for i in G), ring.zero) * QQ(1, len(G))
        limit[r] = lim
        out = sum(powers[i] * vals[n][r].as_expr() for n, i in enumerate(keys)) / sum(powers.values())
        t = [powers[i] for i in gaps]
        rhs = sum(powers[i] * (vals[keys.index(i)][r].as_expr() - lim.as_expr()) for i in gaps)
        identity &= sp.cancel((out - lim.as_expr()) * (len(G) + sum(t)) - rhs) == 0
        tends &= sp.simplify(sp.limit(out, u, sp.oo) - lim.as_expr()) == 0
    return Selection(G, gaps, limit, identity, tends)
