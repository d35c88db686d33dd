"""Lemma A.5 and Theorem 4.2: gradient descent with causal attention (a decoder AlgoFormer).

Problem (Eq. 6): token x_i sees only the samples before it, and holds its own iterate w^i_k for
L(w; P_i) = 1/(2(i-1)) sum_{j<i} (w^T x_j - y_j)^2,  w^i_{k+1} = w^i_k - eta grad L(w^i_k; P_i),
w^i_0 = 0 (w^1 = 0 for ever: the empty prefix has no gradient). The output at x_i is w^i_T^T x_i.
x_test is x_{N+1}: its iterate is the encoder's GD on all N samples.

Prompt (n = 2N + 2 tokens, causal: a token sees itself and every token to its left):

    position   0       1      2      3      4     ...  2N-1   2N    2N+1
    token      sink    x_1    y_1    x_2    y_2   ...  x_N    y_N   x_test
    x          0       x_1    0      x_2    0     ...  x_N    0     x_test
    y          0       0      y_1    0      y_2   ...  0      y_N   0
    pos        P_0     P_1    P_1    P_2    P_2   ...  P_N    P_N   P_{N+1}   (Lemma A.1 signs)
    prev       P_0     P_0    P_0    P_1    P_0   ...  P_{N-1} P_0  P_N       (sample before; else sink)
    is_x               1             1                 1            1
    is_y                      1             1                 1
    is_sink    1                        (is_test on x_test; one = 1 everywhere)

The sink sits first, so every query sees it. Registers added here: xm (d), ym, member (mirror
data), xn (d) = -x_j on y_j (read-out keys), w (d) the iterate on x-tokens, pred the output
w^i^T x_i on x-tokens.

The factor 1/(i-1): an exact average made by attention ("mirrored mean").
    A head whose scores are 0 on a set M of visible keys and -800 elsewhere (weights e^{-800} round to
    0 exactly) averages over M with weights exp(s_j) / sum_M exp(s_k). With data scores s_j = c a_j
    that is mean_M(v) + c Cov_M(v, a) + O(c^2): a *centred* covariance, not the sum we need. The
    fix is a mirror: every sample j enters M twice, once as (key k_j, value v_j) on its y-token and
    once as (-k_j, -v_j) on the next x-token. Then mean_M(v) = mean_M(a) = 0 and the head returns

        f(c) = sum_{j<i} v_j sinh(c a_j) / sum_{j<i} cosh(c a_j) = c/(i-1) sum_{j<i} v_j a_j + O(c^3),

    the average with the exact count: the softmax normaliser *is* 2(i-1). f is odd in c, so one head
    is already second-order; the ``linearise`` variants combine heads sigma_h c with the same
    weights w_h and cancel further orders (``paper``'s sigma = 0 head returns mean(v) = 0). The
    loop is of this mirror kind in every variant: ``odd`` and ``odd+mirror`` build the same loop (the
    suffix only names ``linearise``'s scheme, which here applies to the read-out, always a sink).
    No sink score C is involved: the largest score is c max|a|, so the stable softmax resolves the
    scores to ulp(theta), not ulp(C), and nothing is multiplied by e^C. Error of the mechanism
    (``mean_error_bound``): |f(c)/c - mean(v a)| <= theta^2 max|v| max|a| (sinh x / x - 1 and
    cosh x - 1 are <= x^2 / 2 for |x| <= 1), rounding about u (2(i-1) + 8) max|v| / c, and the count
    itself is exact: the sum of 2(i-1) values exp(+-c a) rounds with relative error <= 2(i-1) u and
    deviates from 2(i-1) by <= theta^2 / 2 (``tests/test_causal_gd.py`` checks the loop computes this
    formula). Measured share (N = 40, d = 20, one loop, float64): while truncation dominates, the
    normaliser's cosh term is the larger of two theta^2 terms of opposite sign (1.4-1.5x the total
    one-step error; the numerator's sinh term about 0.5x); at the float64 floor (theta = 1e-5) it is
    16% (first loop) to 0.2% (sixth), and in float32 from theta = 1e-2 down it is < 40% and then ~0%:
    the floors are the rounding of the mirror pairs, not the count.
    Against the alternative of a ReLU product gadget for (1/(i-1)) * g: that needs the factor as a
    prompt row (the paper's), a width of O(K) units per coordinate and an O(R^2 / K^2) error on a
    declared range R; the normaliser needs no unit, no range and adds no error of its own.
    The mirror rows: y-token j holds (xm, y) = (x_j, y_j), x-token j+1 holds (-x_j, -y_j), member = 1.
    A query at x_i sees y_1..y_{i-1} and x_2..x_i: exactly the pairs j < i, itself included as the
    mirror of sample i-1, and never its own sample (the defect below).

TF_pre (1 layer, 2 heads, no FFN):
    pairing head on pos (Lemma A.1): xm <- x_j, xn <- -x_j at y_j (x_j and y_j share P_j; x-tokens
        are silenced)
    mirror head, query prev, key pos: x_{j+1} attends to x_j and y_j (weight 1/2 each, exact) and
        takes xm <- -x_j, ym <- -y_j, member <- 1; x_1 and the y-tokens point at the sink (value 0)
TF_loop (1 layer, the heads of one variant + FFN):
    mirrored mean, query (w, -is_x), key (xm, y + ym), exclusion key (one - is_y - member) with score
    -800: a_j = +-(w^T x_j - y_j), value xm: w <- w - eta/(i-1) sum_{j<i} (w^T x_j - y_j) x_j
    FFN: w <- 0 exactly on y-tokens and the sink (``gadgets.zero_where``), where the heads leave
    rounding residue of the mirror pairs (they cancel only up to rounding)
TF_post (1 layer, the heads of one variant): ``linearise.bilinear_heads`` with the sink at position 0:
    query w, key x + xn, value is_x + is_y -> pred. The key is x_j on x_j and -x_j on y_j, so from
    x_i the keys are the pairs (x_j, -x_j), j < i, and x_i itself: pred_i = w^i^T x_i, the product of
    two registers of one token, made by attention without a multiplication gadget. With the odd
    heads (sigma = +-1) a pair's terms exp(+-c a) sum to 2 cosh(c a), even in sigma, so the pairs
    cancel between the heads at every order: only x_i's own term is truncated (theta^2 / 6), though
    every visible pair still adds to the rounding (u (C + n) 2i / theta).

Counts: TF_pre 1 layer 2 heads, TF_loop 1 layer 2 heads (``odd``), TF_post 1 layer 2 heads; the
paper's Theorem 4.2 has 1 layer 2 heads, 1 layer 2 heads, and 2 layers 2 heads.

Where this differs from the printed Lemma A.5, and why:
  * The printed head 1 has key c x_j on every x-token, the query's own included: its sum over
    j <= i adds x_i x_i^T w^i, a sample whose label the token cannot see. Here the keys are the
    mirror pairs of samples j < i only (``tests/test_causal_gd.py`` checks the printed version fails).
  * The printed update formula uses w^h_k x_h inside the gradient of token j (each sample's own
    iterate); the printed head computes w^j_k x_h, which is the gradient of Eq. 6: we follow the head.
  * The printed prompt carries 1/(i-1) as a row and leaves the product with the gradient to an FFN
    "approximating multiplication"; here the softmax normaliser is the count (exact, no gadget).
  * The printed second head has constant query and C on y_1 as the sink; with the mirror there is
    no sink in the loop heads (exclusion score -800 instead), and the sink at position 0 serves the
    copies of TF_pre and the linearised read-out of TF_post.
"""
from __future__ import annotations

import math

import numpy as np

from .embeddings import exact_pairing_beta, quasi_orthogonal, pairing_head
from .gadgets import zero_where
from .gd import SELECT_BETA, check_sizes, move
from .layout import Layout
from .linearise import (DEFAULT_VARIANT, VARIANTS, Temperature, bilinear_heads, check_variant, head_weights,
                        odd_values, order)
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, HeadWeights, LayerWeights

EXCLUDE = SELECT_BETA   # score -800 on keys outside the mirrored set: their weight underflows to 0


def decoder_layout(d: int, pos_dim: int) -> Layout:
    lay = Layout()
    for name, size in (("x", d), ("y", 1), ("pos", pos_dim), ("prev", pos_dim), ("is_x", 1), ("is_y", 1),
                       ("is_test", 1), ("is_sink", 1), ("one", 1), ("xm", d), ("ym", 1), ("member", 1),
                       ("xn", d), ("w", d), ("pred", 1)):
        lay.add(name, size)
    return lay


def x_positions(N: int) -> list[int]:
    """Token indices of x_1 .. x_N, x_test (x_{N+1})."""
    return list(range(1, 2 * N + 2, 2))


def encode_decoder(layout: Layout, P: np.ndarray, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """x (B, N, d), y (B, N, 1), x_test (B, d) -> tokens (B, 2N + 2, D) in the order of the docstring."""
    x, y, x_test = np.asarray(x, float), np.asarray(y, float), np.asarray(x_test, float)
    if x.ndim != 3 or y.ndim != 3 or x_test.ndim != 2 or y.shape[2] != 1:
        raise ValueError(f"expected x (B, N, d), y (B, N, 1), x_test (B, d); got {x.shape}, {y.shape}, {x_test.shape}")
    B, N, d = x.shape
    if d != layout.size("x") or y.shape[:2] != (B, N) or x_test.shape != (B, d):
        raise ValueError(f"shapes disagree with the layout (d={layout.size('x')}): x {x.shape}, y {y.shape}, "
                         f"x_test {x_test.shape}")
    if P.shape[0] < N + 2:
        raise ValueError(f"N={N} samples but the construction has embeddings for {P.shape[0] - 2}")
    h = np.zeros((B, 2 * N + 2, layout.dim))
    xs = x_positions(N)
    h[:, xs[:-1], layout["x"]] = x
    h[:, xs[-1], layout["x"]] = x_test
    h[:, 2:2 * N + 1:2, layout["y"]] = y
    Pf = P.astype(float)
    h[:, 0, layout["pos"]] = Pf[0]
    h[:, :, layout["prev"]] = Pf[0]                      # the sink, unless an x-token
    for i, t in enumerate(xs, start=1):                    # x_i (i = N + 1: x_test)
        h[:, t, layout["pos"]] = Pf[i]
        h[:, t, layout["prev"]] = Pf[i - 1]
        if i <= N:
            h[:, t + 1, layout["pos"]] = Pf[i]
    h[:, xs, layout.row("is_x")] = 1.0
    h[:, 2:2 * N + 1:2, layout.row("is_y")] = 1.0
    h[:, xs[-1], layout.row("is_test")] = 1.0
    h[:, 0, layout.row("is_sink")] = 1.0
    h[:, :, layout.row("one")] = 1.0
    return h


def _reader(layout: Layout, *regs: str, signs: tuple[float, ...] | None = None) -> np.ndarray:
    """(size, D) map reading the sum of same-sized registers (with signs)."""
    R = np.zeros((layout.size(regs[0]), layout.dim))
    for reg, s in zip(regs, signs or (1.0,) * len(regs)):
        R[:, layout[reg]] += s * np.eye(layout.size(reg))
    return R


def mirror_layer(layout: Layout, pos_eps: float) -> LayerWeights:
    """TF_pre: the mirrored sample rows, by two exact copy heads (see the module docstring)."""
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    to_y = pairing_head(layout, "pos", move(layout, "x", "xm", 2.0) + move(layout, "x", "xn", -2.0), beta,
                        "x-to-y", silence="is_x")                          # x_j and y_j share weight 1/2
    m = layout.size("pos")
    q = np.zeros((m, layout.dim)); k = np.zeros((m, layout.dim))
    q[:, layout["prev"]] = (beta / m) * np.eye(m)
    k[:, layout["pos"]] = np.eye(m)
    value = move(layout, "x", "xm", -2.0) + move(layout, "y", "ym", -2.0) + move(layout, "is_y", "member", 2.0)
    return LayerWeights(heads=(to_y, HeadWeights(q, k, value, "mirror")), mask="causal", name="mirror")


def mean_heads(layout: Layout, query: np.ndarray, key: np.ndarray, exclude: np.ndarray, value: np.ndarray,
               c: float, variant: str = DEFAULT_VARIANT, name: str = "mean") -> tuple[HeadWeights, ...]:
    """Heads whose summed output at token i is ~= 1/|M_i| sum_{j in M_i} value @ h_j (query h_i).(key h_j),
    M_i the visible keys with exclude @ h_j = 0 (the others must have exclude = 1 exactly), provided
    the keys of M_i come in mirror pairs (+k, +v), (-k, -v). Scores: sigma_h c q.k - 800 exclude."""
    check_variant(variant)
    k, D = query.shape
    out = []
    for h, (sigma, w) in enumerate(zip(VARIANTS[variant], head_weights(variant))):
        q = np.zeros((k + 1, D)); kk = np.zeros((k + 1, D))
        q[:k] = sigma * c * query
        kk[:k] = key
        q[k, layout.row("one")] = -EXCLUDE
        kk[k] = exclude
        out.append(HeadWeights(q, kk, (w / c) * value, f"{name}[{h}]"))
    return tuple(out)


def causal_gd_step_layer(layout: Layout, eta: float, c: float, variant: str = DEFAULT_VARIANT,
                         register_bound: float = 1e8) -> LayerWeights:
    """Lemma A.5: one GD step on every x-token's own prefix loss; maps the layout onto itself."""
    d = layout.size("x")
    query = np.zeros((d + 1, layout.dim)); key = np.zeros((d + 1, layout.dim))
    query[:d, layout["w"]] = np.eye(d)
    query[d, layout.row("is_x")] = -1.0
    key[:d, layout["xm"]] = np.eye(d)
    key[d, layout.row("y")] += 1.0
    key[d, layout.row("ym")] += 1.0
    exclude = np.zeros(layout.dim)
    exclude[[layout.row("one"), layout.row("is_y"), layout.row("member")]] = (1.0, -1.0, -1.0)
    heads = mean_heads(layout, query, key, exclude, move(layout, "xm", "w", -eta), c, variant, "causal-gd")
    ffn = zero_where(layout, "w", ("is_y", "is_sink"), register_bound)
    return LayerWeights(heads=heads, ffn=ffn, mask="causal", name="causal-gd-step")


def sink_variant(variant: str) -> str:
    """The read-out needs a *sum* over a number of keys that grows with the position: the sink
    scheme of ``linearise`` (the mirror scheme divides by a fixed key count)."""
    return variant.removesuffix("+mirror")


def post_temperature(temp: Temperature, n: int, variant: str = DEFAULT_VARIANT) -> Temperature:
    """A mirror schedule hands out C = 0; the read-out's sink then takes C = ln(20 n) + P ln(1/c) (P the
    order of the variant), which keeps the leakage n e^{-C} <= c^P / 20 below the truncation
    (c max|a|)^P whenever max|a| >= 1."""
    if temp.C > 0:
        return temp
    return Temperature(math.log(20 * n) + order(sink_variant(variant)) * math.log(max(1.0 / temp.c, 1.0)), temp.c)


def predict_layer(layout: Layout, temp: Temperature, variant: str = DEFAULT_VARIANT) -> LayerWeights:
    """TF_post: pred_i = w^i^T x_i as a sum over the visible sample tokens whose keys cancel in pairs."""
    value = move(layout, "is_x", "pred") + move(layout, "is_y", "pred")
    heads = bilinear_heads(layout, _reader(layout, "w"), _reader(layout, "x", "xn"), value, temp,
                           sink_variant(variant), "w-dot-x")
    return LayerWeights(heads=heads, mask="causal", name="predict")


def causal_gd_construction(d: int, N: int, eta: float, temps: dict[str, Temperature],
                           variant: str = DEFAULT_VARIANT, pos_eps: float = 0.1, seed: int = 0,
                           register_bound: float = 1e8) -> Construction:
    """Theorem 4.2. ``temps``: "mean" (only its c is used: no sink score) and "post" (C and c)."""
    check_sizes(d=d, N=N)
    if odd_values(variant):
        raise ValueError(f"variant={variant!r} is invalid here: the decoder loop is already a mirrored mean "
                         "(odd heads); its variants are the sigma-pair ones (odd, richardson*, +mirror)")
    if not eta > 0:
        raise ValueError(f"eta={eta!r} is invalid: expected a float > 0")
    missing = {"mean", "post"} - set(temps)
    if missing:
        raise ValueError(f"temps is missing {sorted(missing)}: expected keys 'mean', 'post'")
    P = quasi_orthogonal(N + 2, pos_eps, seed)
    lay = decoder_layout(d, P.shape[1])
    weights = AlgoFormerWeights(
        lay,
        pre=(mirror_layer(lay, pos_eps),),
        loop=(causal_gd_step_layer(lay, eta, temps["mean"].c, variant, register_bound),),
        post=(predict_layer(lay, post_temperature(temps["post"], 2 * N + 2, variant), variant),),
        notes={"algorithm": "decoder-gd", "d": d, "N": N, "eta": eta, "variant": variant,
               "c_mean": temps["mean"].c, "C_post": post_temperature(temps["post"], 2 * N + 2, variant).C,
               "c_post": temps["post"].c},
    )
    xs = x_positions(N)
    return DecoderConstruction(weights, P, answer=Readout("pred", xs), iterate=Readout("w", xs),
                               assumptions={"N": N, "register_bound": register_bound})


class DecoderConstruction(Construction):
    def encode(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        N = np.asarray(x).shape[1]
        if N != self.assumptions["N"]:
            raise ValueError(f"N={N} samples, but the construction was built for N={self.assumptions['N']}")
        return encode_decoder(self.layout, self.pos, x, y, x_test)


def mean_error_bound(theta: float, n_pairs: int, max_v: float, max_a: float, c: float,
                     unit_roundoff: float) -> dict[str, float]:
    """Bound on |f(c)/c - mean_j v_j a_j| for one mirrored-mean head (sigma = 1), theta = c max|a| <= 1.

    f(c)/c - mean(v a) = [mean(v (sinh(c a)/(c a) - 1) a) - mean(v a) (mean cosh - 1)] / mean cosh;
    both brackets are <= theta^2 / 2 max|v| max|a| (|sinh x / x - 1|, cosh x - 1 <= x^2/2 for |x| <= 1,
    and mean cosh >= 1). ``count`` is the normaliser's relative deviation from 2 n_pairs (cosh part
    plus the rounding of its sum); ``rounding`` the cancellation of the mirror pairs, amplified by 1/c.
    """
    if not 0 < theta <= 1:
        raise ValueError(f"theta={theta!r} is invalid: expected a float in (0, 1]")
    trunc = theta ** 2 * max_v * max_a
    count = math.cosh(theta) - 1 + 2 * n_pairs * unit_roundoff
    rnd = unit_roundoff * (2 * n_pairs + 8) * math.cosh(theta) * max_v / c
    return {"truncation": trunc, "count": count, "rounding": rnd, "total": trunc + rnd}
