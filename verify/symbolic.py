"""Symbolic proofs (sympy) that the constructed layers compute the algorithms' steps (issue 4, part 4).

``python -m verify symbolic LEMMA`` runs one proof, ``python -m verify symbolic all`` all of them.
Each proof builds the project's own weights (``constructions``) for tiny sizes, makes their
parameters symbolic (``symbolic_engine.identify_layer``), puts symbolic data in the tokens, applies
Eq. 1 exactly and expands the result in eps = e^{-C} and c (``symbolic_engine``). What is shown:

    variants  sum_h w_h exp(sigma_h z) = z + k z^{P+1} + O(z^{P+2}), k != 0, with the project's
              weights: P = 1 (paper), 2 (odd: the second-order term vanishes), 4 (richardson4),
              6 (richardson6); the weights equal the exact Vandermonde solution.
    A.2       the GD loop layer (every variant): leading order eps^0 of the output is, at c -> 0,
              exactly one GD step r_j <- A_{k+1} x_j - y_j, A_{k+1} x_test, every other row kept;
              no eps^{-1} or c^{-1} term; the c^1 .. c^{P-1} terms vanish, c^P does not.
    A.4       the Newton loop layer (every variant), the same way: M x_j <- 2 M x_j - M S M x_j with
              M symmetric and S = sum_i x_i x_i^T; and the printed FFN "weight 1/c" cannot do it.
    pairing   the pairing heads of GD's and Newton's pre/post layers with symbolic beta: the
              beta -> oo limit is exactly the pair mean (-y_i / y_i on x_i, 0 elsewhere), and the
              output differs from it by sum_{i outside} t_i (v_i - mean) / (g + sum t), t_i =
              e^{-beta gap_i}, every gap >= the embeddings' margin: the bound 2 (n-g) e^{-beta eps}/g.
    A.3, A.5  see ``prove_copy`` and ``prove_causal_gd``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import sympy as sp
from sympy import QQ
from sympy.polys.rings import ring

from constructions.copy import copy_block, encode_sequence, gate, n_embeddings, sequence_layout, slot
from constructions.embeddings import exact_pairing_beta, pairing_head, quasi_orthogonal
from constructions.gd import gd_layout, gd_registers_layer, gd_step_layer, move
from constructions.linearise import VARIANTS, Temperature, bilinear_heads, head_weights, order
from constructions.newton import _reader, newton_layout, newton_post, newton_step_layer
from constructions.weights import LayerWeights

from .symbolic_engine import (ProofError, apply_attention, apply_ffn, apply_layer, identify_layer, rational,
                              selection)

STATED_ORDER = {"paper": 1, "odd": 2, "richardson4": 4, "richardson6": 6}


@dataclass(frozen=True)
class Proof:
    name: str
    statement: str
    passed: bool
    details: tuple[str, ...] = field(default_factory=tuple)


# -- linearisation variants ---------------------------------------------------------------------------

def linearisation_order(sigmas, weights, top: int = 8) -> tuple[int | None, sp.Expr]:
    """P with sum_h w_h exp(sigma_h z) = z + k z^{P+1} + ..., k != 0 (None if not z + O(z^2))."""
    z = sp.Symbol("z")
    f = sum(sp.Rational(w) * sp.exp(sp.Rational(s) * z) for s, w in zip(sigmas, weights))
    ser = sp.series(f, z, 0, top + 1).removeO()
    coeffs = [sp.nsimplify(ser.coeff(z, p)) for p in range(top + 1)]
    if coeffs[0] != 0 or coeffs[1] != 1:
        return None, ser
    P = next((p - 1 for p in range(2, top + 1) if coeffs[p] != 0), None)
    return P, ser


def exact_weights(variant: str) -> list[sp.Rational]:
    s = [sp.Rational(x) for x in VARIANTS[variant]]
    V = sp.Matrix(len(s), len(s), lambda p, h: s[h] ** p)
    rhs = sp.Matrix([1 if p == 1 else 0 for p in range(len(s))])
    return list(V.LUsolve(rhs))


def prove_variants() -> Proof:
    details, ok = [], True
    for v, P_stated in STATED_ORDER.items():
        w = [sp.Rational(rational(float(x), f"{v} weight")) for x in head_weights(v)]
        same = w == exact_weights(v)
        P, ser = linearisation_order(VARIANTS[v], w)
        good = same and P == P_stated == order(v)
        ok &= good
        details.append(f"{v}: sigma={list(VARIANTS[v])} w={[str(x) for x in w]} "
                       f"(exact Vandermonde solution: {same}); sum w e^(sigma z) = {ser} + ... -> P={P}"
                       f" (stated {P_stated}, linearise.order {order(v)})")
    return Proof("variants", "sum_h w_h exp(sigma_h z) = z + O(z^{P+1}) with exactly P = 1 (paper), "
                 "2 (odd), 4 (richardson4), 6 (richardson6), for the project's head weights", ok, tuple(details))


# -- linearised loop layers: GD (A.2) and Newton (A.4) ----------------------------------------------

def blank_tokens(lay, n: int, R) -> list[list]:
    return [[R.zero] * lay.dim for _ in range(n)]


def put(tok: list, lay, reg: str, vals) -> None:
    for r, v in zip(range(*lay[reg].indices(lay.dim)), vals):
        tok[r] = v


def regression_tokens(lay, R, xs, ys, xt, pos) -> list[list]:
    """Prompt x_1, y_1, ..., x_N, y_N, x_test, sink (as in ``constructions.prompt``), symbolic."""
    N = len(xs)
    h = blank_tokens(lay, 2 * N + 2, R)
    for i in range(N):
        put(h[2 * i], lay, "x", xs[i]); put(h[2 * i + 1], lay, "y", ys[i])
        h[2 * i][lay.row("is_x")] = h[2 * i + 1][lay.row("is_y")] = R.one
        put(h[2 * i], lay, "pos", pos[i]); put(h[2 * i + 1], lay, "pos", pos[i])
    put(h[2 * N], lay, "x", xt); h[2 * N][lay.row("is_test")] = R.one
    h[2 * N + 1][lay.row("is_sink")] = R.one
    put(h[2 * N], lay, "pos", pos[N]); put(h[2 * N + 1], lay, "pos", pos[N])
    for tok in h:
        tok[lay.row("one")] = R.one
    return h


def check_expansion(out, target, lay, P: int, require_order: bool = True) -> tuple[bool, list[str]]:
    """Compare a layer's series with the step: eps^0 c^0 == target, no eps^-1 or c^-1 terms,
    c^1 .. c^{P-1} zero, c^P nonzero somewhere."""
    labels, bad, top = lay.labels(), [], False
    for j, (tok, want) in enumerate(zip(out, target)):
        for r, s in enumerate(tok):
            for (e, p), v in s.items():
                if e < 0 or p < 0 or (e == 0 and 0 < p < P):
                    bad.append(f"token {j} {labels[r]}: eps^{e} c^{p} term {v.as_expr()} != 0")
                top |= (e, p) == (0, P)
            got = s.get((0, 0), want[r].ring.zero)
            if got != want[r]:
                bad.append(f"token {j} {labels[r]}: leading term {got.as_expr()} != step {want[r].as_expr()}")
    if require_order and not top:
        bad.append(f"no c^{P} term: the error is smaller than claimed")
    return not bad, bad[:6]


def gd_setting(d: int = 2, N: int = 2):
    names = [f"x{i}_{k}" for i in range(N) for k in range(d)] + [f"y{i}" for i in range(N)] \
        + [f"t{k}" for k in range(d)] + [f"a{k}" for k in range(d)] + [f"p{i}" for i in range(N + 1)] + ["eta"]
    R, *g = ring(",".join(names), QQ)
    s = dict(zip(names, g))
    xs = [[s[f"x{i}_{k}"] for k in range(d)] for i in range(N)]
    ys = [[s[f"y{i}"]] for i in range(N)]
    xt = [s[f"t{k}"] for k in range(d)]
    A = [s[f"a{k}"] for k in range(d)]
    return R, s, xs, ys, xt, A


def gd_step_claim(variant: str, d: int = 2, N: int = 2) -> tuple[bool, list[str]]:
    R, s, xs, ys, xt, A = gd_setting(d, N)
    lay = gd_layout(d, 1, 1)
    layer = identify_layer(lambda p: gd_step_layer(lay, p["eta"], Temperature(p["C"], p["c"]), variant),
                           ("1", "c", "C", "eta e^C/c"))
    dotv = lambda u, v: sum((a * b for a, b in zip(u, v)), R.zero)
    h = regression_tokens(lay, R, xs, ys, xt, [[s[f"p{i}"]] for i in range(N + 1)])
    r = [dotv(A, xs[i]) - ys[i][0] for i in range(N)]
    for i in range(N):
        put(h[2 * i], lay, "xN", [x * QQ(1, N) for x in xs[i]]); put(h[2 * i], lay, "r", [r[i]])
    put(h[2 * N], lay, "r", [dotv(A, xt)])
    grad = [sum((r[i] * xs[i][k] for i in range(N)), R.zero) * QQ(1, N) for k in range(d)]   # grad L(A)
    A1 = [A[k] - s["eta"] * grad[k] for k in range(d)]
    target = [list(t) for t in h]
    for i in range(N):
        put(target[2 * i], lay, "r", [dotv(A1, xs[i]) - ys[i][0]])
    put(target[2 * N], lay, "r", [dotv(A1, xt)])
    P = STATED_ORDER[variant]
    assumptions: list[str] = []
    out = apply_layer(layer, h, s, 0, P, assumptions)
    ok, msgs = check_expansion(out, target, lay, P)
    return ok, msgs + [f"{len(assumptions)} ffn units off under the declared register_bound"]


def run_claims(name: str, statement: str, claims) -> Proof:
    details, ok = [], True
    for label, fn in claims:
        try:
            good, msgs = fn()
        except ProofError as e:
            good, msgs = False, [f"not of the assumed form: {e}"]
        ok &= good
        details.append(f"{label}: {'holds' if good else 'FAILS'}" + ("; " + "; ".join(msgs) if msgs else ""))
    return Proof(name, statement, ok, tuple(details))


def prove_gd_step() -> Proof:
    return run_claims(
        "A.2", "Lemma A.2 (gd_step_layer, d=2, N=2, every variant): at leading order in e^{-C} the layer "
        "maps r_j = A x_j - y_j to A' x_j - y_j and r_test = A x_test to A' x_test, A' = A - eta grad L(A), "
        "exactly at c -> 0, keeping every other row; the c^1..c^{P-1} terms vanish and c^P does not",
        [(v, lambda v=v: gd_step_claim(v)) for v in VARIANTS])


def newton_setting(d: int = 2, N: int = 2):
    names = [f"x{i}_{k}" for i in range(N) for k in range(d)] + [f"y{i}" for i in range(N)] \
        + [f"t{k}" for k in range(d)] + [f"m{a}{b}" for a in range(d) for b in range(a, d)] \
        + [f"p{i}" for i in range(N + 1)]
    R, *g = ring(",".join(names), QQ)
    s = dict(zip(names, g))
    xs = [[s[f"x{i}_{k}"] for k in range(d)] for i in range(N)]
    M = [[s[f"m{min(a, b)}{max(a, b)}"] for b in range(d)] for a in range(d)]
    return R, s, xs, M


def newton_tokens(d: int, N: int):
    R, s, xs, M = newton_setting(d, N)
    lay = newton_layout(d, 1)
    mv = lambda A, v: [sum((A[a][b] * v[b] for b in range(d)), R.zero) for a in range(d)]
    h = regression_tokens(lay, R, xs, [[s[f"y{i}"]] for i in range(N)], [s[f"t{k}"] for k in range(d)],
                          [[s[f"p{i}"]] for i in range(N + 1)])
    for i in range(N):
        put(h[2 * i], lay, "xs", xs[i]); put(h[2 * i], lay, "Mx", mv(M, xs[i]))
    S = [[sum((x[a] * x[b] for x in xs), R.zero) for b in range(d)] for a in range(d)]
    MSM = [[sum((M[a][k] * S[k][l] * M[l][b] for k in range(d) for l in range(d)), R.zero)
            for b in range(d)] for a in range(d)]
    target = [list(t) for t in h]
    for i in range(N):
        put(target[2 * i], lay, "Mx", [2 * u - v for u, v in zip(mv(M, xs[i]), mv(MSM, xs[i]))])
    return R, s, lay, h, target


def newton_step_claim(variant: str, d: int = 2, N: int = 2) -> tuple[bool, list[str]]:
    R, s, lay, h, target = newton_tokens(d, N)
    layer = identify_layer(lambda p: newton_step_layer(lay, Temperature(p["C"], p["c"]), variant),
                           ("1", "c", "C", "e^C/c"))
    P = STATED_ORDER[variant]
    assumptions: list[str] = []
    ok, msgs = check_expansion(apply_layer(layer, h, s, 0, P, assumptions), target, lay, P)
    return ok, msgs + [f"{len(assumptions)} ffn units off under the declared register_bound"]


def printed_newton_claim(d: int = 2, N: int = 2) -> tuple[bool, list[str]]:
    """The printed Lemma A.4: W_V = e^C M x_i (two heads, constant cancel), then an FFN that scales the
    row by a per-row constant lambda (the printed "weight 1/c", or any other). Claim: some lambda(c)
    gives 2 M x_j - M S M x_j for small c > 0. It does not (CONSTRUCTIONS.md defect 1)."""
    R, s, lay, h, target = newton_tokens(d, N)

    def printed(p):
        heads = bilinear_heads(lay, _reader(lay, "Mx"), _reader(lay, "xs"), move(lay, "Mx", "Mx", p["c"]),
                               Temperature(p["C"], p["c"]), "paper", "printed")
        return LayerWeights(heads=heads, name="printed-newton")
    layer = identify_layer(printed, ("1", "c", "C", "e^C"))
    out = apply_attention(layer, h, s, 0, 1)
    lam, c = sp.symbols("lambda c")
    eqs = []
    for r in range(*lay["Mx"].indices(lay.dim)):
        row = sum(c ** p * v.as_expr() for (e, p), v in out[0][r].items() if e == 0)   # to O(c^2)
        diff = sp.Poly(sp.expand(lam * row - target[0][r].as_expr()), *[g.as_expr() for g in R.gens])
        eqs += diff.coeffs()
    sols = [x for x in sp.solve(eqs, [lam, c], dict=True) if not (x.get(c, -1).is_number and x.get(c, -1) <= 0)]
    return bool(sols), [f"row after the printed heads: {sp.factor(row)} + O(c^2); lambda * row = target "
                        f"has solutions {sp.solve(eqs, [lam, c], dict=True)} (none with c > 0)"]


def prove_newton_step() -> Proof:
    claims = [(v, lambda v=v: newton_step_claim(v)) for v in VARIANTS]
    claims.append(("printed FFN 'weight 1/c' (defect 1) cannot", lambda: _negate(printed_newton_claim())))
    return run_claims(
        "A.4", "Lemma A.4 (newton_step_layer, d=2, N=2, every variant, M symmetric): at leading order in "
        "e^{-C} the layer maps M x_j to 2 M x_j - M S M x_j on every x-token, exactly at c -> 0, keeping "
        "every other row; the c^1..c^{P-1} terms vanish and c^P does not; the printed FFN cannot do it", claims)


def _negate(res: tuple[bool, list[str]]) -> tuple[bool, list[str]]:
    return not res[0], res[1]


# -- selection heads: the pairing head (Lemma A.1) and the copy block (Lemma A.3) -------------------

def outside_weight_certificate(k: int) -> bool:
    """With g group keys (weight e^0 = 1 each) and k others of weight t_i <= T = e^{-beta eps}:
    k T / g - S / (g + S) == sum_i (T - t_i) / g + S^2 / (g (g + S)),  S = sum t_i, every term >= 0,
    so the total weight outside the group is <= k e^{-beta eps} / g."""
    g, T = sp.symbols("g T", positive=True)
    t = sp.symbols(f"t0:{k}", positive=True)
    S = sum(t)
    return sp.cancel(k * T / g - S / (g + S) - (sum(T - x for x in t) / g + S ** 2 / (g * (g + S)))) == 0


def selection_claim(layer, h, target_rows: dict, lay, margin: float, checked=lambda head, j: True
                    ) -> tuple[bool, list[str], list]:
    """Every query of every head: the exact remainder identity and the limit as beta -> oo; where
    ``checked(head index, query)``: every gap >= margin; rows in ``target_rows``: limit == target.
    Returns the limit state (residual included) for the FFNs that follow."""
    labels, bad, worst = lay.labels(), [], None
    state = [list(t) for t in h]
    for hi, head in enumerate(layer.heads):
        for j in range(len(h)):
            sel = selection(head, h, j, range(len(h)))
            for r, v in sel.limit.items():
                state[j][r] = state[j][r] + v
            if not (sel.identity and sel.tends):
                bad.append(f"{head.name} query {j}: remainder identity {sel.identity}, limit {sel.tends}")
            gap = min(sel.gaps.values(), default=None)
            if gap is not None and checked(hi, j) and (worst is None or gap < worst[0]):
                worst = (gap, len(sel.gaps), len(sel.group))
    for (j, r), want in target_rows.items():
        if state[j][r] != want:
            bad.append(f"token {j} {labels[r]}: limit {state[j][r].as_expr()} != {want.as_expr()}")
    gap, k, g = worst
    if gap < Fraction(margin) or not outside_weight_certificate(k):
        bad.append(f"smallest gap {gap} < margin {margin}")
    return not bad, bad[:6] + [f"smallest score gap {float(gap):.4f} >= margin {margin}: outside weight "
                               f"<= (n-g) e^(-beta {float(gap):.4f}) / g"], state


def pairing_claim(which: str, d: int = 2, N: int = 2, pos_eps: float = 0.1) -> tuple[bool, list[str]]:
    """The pairing head of GD's TF_pre (r <- -y_i on x_i) or Newton's TF_post (ypair <- y_i on x_i),
    built as the constructions build it, with beta symbolic; embeddings as the constructions draw them."""
    P = quasi_orthogonal(N + 1, pos_eps, 0)
    R, s, xs, _ = newton_setting(d, N)
    ys = [[s[f"y{i}"]] for i in range(N)]
    lay = gd_layout(d, 1, P.shape[1]) if which == "gd" else newton_layout(d, P.shape[1])
    dst, scale = ("r", -2.0) if which == "gd" else ("ypair", 2.0)
    beta = exact_pairing_beta(P.shape[1], pos_eps)
    real = (gd_registers_layer(lay, N, 100.0, pos_eps) if which == "gd"
            else newton_post(lay, pos_eps, Temperature(1.0, 1.0))[0]).heads[0]
    mine = pairing_head(lay, "pos", move(lay, "y", dst, scale), beta, "pair-y", silence="is_y")
    if not all(np.array_equal(getattr(real, a), getattr(mine, a)) for a in ("query", "key", "value")):
        return False, ["the head rebuilt with symbolic beta differs from the construction's"]
    layer = identify_layer(lambda p: LayerWeights(heads=(pairing_head(
        lay, "pos", move(lay, "y", dst, scale), p["beta"], "pair-y", silence="is_y"),)), ("1", "beta"))
    pos = [[R.one * int(v) for v in row] for row in P[:N + 1]]
    h = regression_tokens(lay, R, xs, ys, [s[f"t{k}"] for k in range(d)], pos)
    want = {(2 * i, lay[dst].start): ys[i][0] * (-1 if which == "gd" else 1) for i in range(N)}
    want.update({(j, lay[dst].start): R.zero for j in range(1, 2 * N + 2, 2)})
    want[(2 * N, lay[dst].start)] = R.zero
    ok, msgs, _ = selection_claim(layer, h, want, lay, pos_eps)
    return ok, msgs


def prove_pairing() -> Proof:
    return run_claims(
        "pairing", "Lemma A.1 pairing head (as built for GD's TF_pre and Newton's TF_post, N=2, beta "
        "symbolic): as beta -> oo the output is exactly the pair mean (r = -y_i, resp. ypair = y_i, on "
        "x_i; 0 on y-tokens, which attend to the sink, and on the test token and sink); the remainder "
        "is sum_{i outside} t_i (v_i - mean) / (g + sum t), t_i = e^{-beta gap_i}, every gap >= eps, "
        "so the weight outside the group is <= (n-g) e^{-beta eps} / g",
        [("GD TF_pre head (r <- -2 mean y)", lambda: pairing_claim("gd")),
         ("Newton TF_post head (ypair <- 2 mean y)", lambda: pairing_claim("newton"))])


def copy_claim(d: int = 1, N: int = 4, q: int = 2, pos_eps: float = 0.1) -> tuple[bool, list[str]]:
    """Lemma A.3 (``constructions.copy.copy_block``, beta symbolic): slot i of token t tends to x_{t-i}
    for t >= i with the pairing remainder (groups of one), and both FFNs then give exactly
    win_t = [x_{t-q}, ..., x_{t-1}] (x_s = 0 for s < 0) and the gates no_prev{i} = [t < i]."""
    P = quasi_orthogonal(n_embeddings(N, q, False), pos_eps, 0)
    lay = sequence_layout(d, q, P.shape[1])
    names = [f"x{t}_{k}" for t in range(N) for k in range(d)]
    R, *g = ring(",".join(names), QQ)
    x = [g[t * d:(t + 1) * d] for t in range(N)]
    enc = encode_sequence(lay, P, q, np.zeros((1, N, d)))[0]               # the real encoder, data 0
    h = [[R.one * rational(float(v), "token") for v in row] for row in enc]
    for t in range(N):
        put(h[t], lay, "xt", x[t])
    layers = [identify_layer(lambda p, k=k: copy_block(lay, q, p["beta"], 100.0)[k], ("1", "beta"))
              for k in range(2)]
    want = {}
    for t in range(N):
        for i in range(1, q + 1):
            for k, r in enumerate(range(*slot(lay, i).indices(lay.dim))):
                want[(t, r)] = x[t - i][k] if t >= i else R.zero
            want[(t, lay.row(gate(i)))] = R.one if t < i else R.zero
    heads_want = {key: v for key, v in want.items() if key[1] in range(*lay["win"].indices(lay.dim))
                  and any(key[0] >= i and key[1] in range(*slot(lay, i).indices(lay.dim)) for i in range(1, q + 1))}
    ok, msgs, state = selection_claim(layers[0], h, heads_want, lay, pos_eps, lambda hi, t: t >= hi + 1)
    assumptions: list[str] = []
    tok = [[({(0, 0): v} if v != 0 else {}) for v in row] for row in state]
    for k, layer in enumerate(layers):
        tok = [apply_ffn(layer.ffn, row, R, assumptions, f"layer {k + 1} token {t}") for t, row in enumerate(tok)]
    labels = lay.labels()
    for (t, r), v in want.items():
        got = tok[t][r].get((0, 0), R.zero)
        if set(tok[t][r]) - {(0, 0)} or got != v:
            ok = False
            msgs.insert(0, f"after the FFNs, token {t} {labels[r]} = {got.as_expr()} != {v.as_expr()}")
    return ok, msgs + [f"{len(assumptions)} ffn units off under the declared x_bound"]


def prove_copy() -> Proof:
    return run_claims(
        "A.3", "Lemma A.3 (copy_block, d=1, N=4, q=2, beta symbolic): head i's query at token t >= i "
        "tends to exactly x_{t-i} as beta -> oo, with remainder sum_{s != t-i} t_s (x_s - x_{t-i}) / "
        "(1 + sum t), t_s = e^{-beta gap_s}, gaps >= eps; the two FFNs then give exactly "
        "win_t = [x_{t-2}, x_{t-1}] (0 for s < 0) and no_prev{i} = [t < i]",
        [("copy block", copy_claim)])
