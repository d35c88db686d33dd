"""Lemma A.4 (one Newton-Schulz step) and Theorem 4.1 (Newton's method for linear regression).

Problem (Eq. 4-5): S = X^T X = sum_i x_i x_i^T, M_0 = alpha S with 0 < alpha < 2 / ||S S^T||_2
(open interval: at the endpoint ||I - M_k S|| stays 1), M_{k+1} = 2 M_k - M_k S M_k,
w_k = M_k X^T y, prediction w_k^T x_test. The tokens hold M_k x_i, never M_k itself.

Layout (tokens as in ``prompt``; registers added here):

    token      x_i          y_i          x_test       sink
    xs         x_i          0            0            0           queries / values of TF_pre
    xk         x_i          -x_i         0            0           keys (mirrored: a symmetric key set)
    Mx         M_k x_i      0            0            0           the iterate
    Mk         M_T x_i      -M_T x_i     0            0           keys of TF_post (mirrored)
    ypair      y_i          0            0            0           (TF_post)
    answer     .            .            w_T^T x_test .           (TF_post)

TF_pre (2 layers):
    1. pairing head: xk <- -2 mean_pair(x) (test and sink silenced); FFN: xs <- x and xk += 2 x, both
       gated off on the test token (``gadgets.gated_copy``, exact for |x| <= x_bound)
    2. linearised heads, query xs_j, key xk_i, value alpha xs_i:  Mx_j <- alpha S x_j = M_0 x_j
TF_loop (1 layer = Lemma A.4):
    linearised heads, query Mx_j, key xk_i, value -1/2 Mx_i:  Mx_j <- M x_j - 1/2 M S M x_j
    FFN doubles Mx exactly on x-tokens and zeroes it exactly elsewhere:  Mx_j <- 2 M x_j - M S M x_j
Mirrored values (the ``sinh`` variants, loop only): the loop gets a first layer, a pairing head
    writing Mx <- -M x_i onto the y-token of pair i exactly; the step's heads then see value -1/2 Mx
    with key -x_i on every y-token, so each head is odd by itself (``linearise``: O(c^{2H}) from H
    heads); the step's FFN zeroes the y-tokens again, so TF_post is unchanged. TF_pre and TF_post keep
    zero-value mirrors and use richardson+mirror of the same order (``group_variants``).
TF_post (2 layers):
    1. pairing heads (Lemma A.1): ypair <- 2 mean_pair(y) = y_i on x_i (exact; y-tokens silenced),
       Mk <- -2 mean_pair(Mx) = -M x_i on both tokens; FFN: Mk += 2 Mx (exact): the mirrored keys
    2. linearised heads, query x_j, key Mk_i, value ypair_i: at the test token
       answer <- sum_i y_i (M_T x_i)^T x_test = (M_T X^T y)^T x_test = w_T^T x_test
Registers are zeroed exactly off the x-tokens after every linearised layer (``gadgets.zero_where``,
exact while |M_k x_i| <= register_bound): the heads leave rounding residue on tokens whose query data
is zero, and residue on the sink is multiplied by e^C / c in the next loop: without the clean-up it
grew about 30x per loop in float64 at C = 31.5 (found by running 20 loops).

Where this differs from the printed proof, and why:
  * Lemma A.4 prints an FFN "with weight 1/c" that turns Mx + c M S M x into 2 Mx - M S M x; a
    per-row linear map cannot (it scales the whole row): the factor -1/(2c) sits in W_V and the FFN
    doubles (CONSTRUCTIONS.md defect 1).
  * The printed TF_pre value "e^C x_i on x-tokens, 0 on the test token" is not a linear function of
    the prompt (x_test sits in the same rows as x_i): a gated copy xs is formed first (one more layer).
  * Keys are mirrored (xk, Mk carry -x_i, -M x_i on the y-tokens) so that the default ``+mirror``
    variants need no sink; the sink variants, the paper's included, run on the same layout.
  * The printed TF_post copies 2 y_i onto the y-tokens too (defect 7); here ypair = y_i on the x-token
    only, exactly, and y is left alone.
  * The answer is read on the test token, where the post-transformer's query x_test lands; the printed
    proof leaves it there as well.
  * Scores of the loop heads are bounded for every k: M_k = S^{-1/2} U_k S^{-1/2} with U_k's
    eigenvalues u in (0, 2) at k = 0 and (0, 1] after, so |x_i^T M_k x_j| <= max(|x_i^T M_0 x_j|,
    max_i x_i^T S^{-1} x_i) <= 2 (leverages are <= 1): one c serves all loops (``loop_score_bound``).
"""
from __future__ import annotations

import numpy as np

from .embeddings import exact_pairing_beta, pairing_head, quasi_orthogonal
from .gadgets import gated_copy, identity, zero_where
from .gd import check_sizes, move
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature, bilinear_heads, odd_values, order
from .prompt import Construction, Readout, regression_layout
from .weights import AlgoFormerWeights, FFNWeights, LayerWeights


def newton_layout(d: int, pos_dim: int) -> Layout:
    lay = regression_layout(d, 1, pos_dim)
    lay.add("xs", d)
    lay.add("xk", d)
    lay.add("Mx", d)
    lay.add("Mk", d)
    lay.add("ypair", 1)
    lay.add("answer", 1)
    return lay


def _reader(layout: Layout, reg: str) -> np.ndarray:
    R = np.zeros((layout.size(reg), layout.dim))
    R[:, layout[reg]] = np.eye(layout.size(reg))
    return R


NOT_X = ("is_y", "is_test", "is_sink")


def group_variants(variant: str) -> dict[str, str]:
    """The variant of each linearised group. A ``sinh`` variant needs mirrored values, which only the
    loop has (``newton_mirror_layer``); TF_pre and TF_post (run once, zero-value mirrors) then use the
    richardson+mirror variant of the same order (twice the heads)."""
    if not odd_values(variant):
        return {"pre": variant, "loop": variant, "post": variant}
    same = f"richardson{order(variant)}+mirror"
    return {"pre": same, "loop": variant, "post": same}


def newton_step_layer(layout: Layout, temp: Temperature, variant: str = DEFAULT_VARIANT,
                      register_bound: float = 1e8, n_keys: int | None = None) -> LayerWeights:
    """Lemma A.4: M x <- 2 M x - M S M x on every x-token; maps the layout onto itself. With a
    ``sinh`` variant the y-tokens must hold -M x_i when it runs (``newton_mirror_layer`` before it)."""
    heads = bilinear_heads(layout, _reader(layout, "Mx"), _reader(layout, "xk"),
                           move(layout, "Mx", "Mx", -0.5), temp, variant, "newton", n_keys,
                           mirrored_values=odd_values(variant))
    ffn = zero_where(layout, "Mx", NOT_X, register_bound, then_scale=2.0)   # double; 0 off x-tokens
    return LayerWeights(heads=heads, ffn=ffn, name="newton-step")


def newton_mirror_layer(layout: Layout, pos_eps: float) -> LayerWeights:
    """Mx on y_i <- -Mx on x_i, exactly (pairing head; x-tokens, test and sink silenced): the mirrored
    values of the ``sinh`` loop, re-formed exactly before every step (see ``gd`` for why exactly)."""
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    head = pairing_head(layout, "pos", move(layout, "Mx", "Mx", -2.0), beta, "mirror-Mx",
                        silence=("is_x", "is_test", "is_sink"))
    return LayerWeights(heads=(head,), name="newton-mirror")


def newton_pre(layout: Layout, alpha: float, x_bound: float, pos_eps: float, temp: Temperature,
               variant: str = DEFAULT_VARIANT, register_bound: float = 1e8,
               n_keys: int | None = None) -> tuple[LayerWeights, ...]:
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    pair_x = pairing_head(layout, "pos", move(layout, "x", "xk", -2.0), beta, "pair-x",
                          silence=("is_test", "is_sink"))
    ffn = FFNWeights.concat(gated_copy(layout, "x", "xs", off="is_test", bound=x_bound),
                            gated_copy(layout, "x", "xk", off="is_test", bound=2 * x_bound, scale=2.0))
    gate = LayerWeights(heads=(pair_x,), ffn=ffn, name="registers")
    init = bilinear_heads(layout, _reader(layout, "xs"), _reader(layout, "xk"),
                          move(layout, "xs", "Mx", alpha), temp, variant, "alpha-S-x", n_keys)
    return gate, LayerWeights(heads=init, ffn=zero_where(layout, "Mx", NOT_X, register_bound), name="M0-x")


def newton_post(layout: Layout, pos_eps: float, temp: Temperature, variant: str = DEFAULT_VARIANT,
                n_keys: int | None = None) -> tuple[LayerWeights, ...]:
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    pair_y = pairing_head(layout, "pos", move(layout, "y", "ypair", 2.0), beta, "pair-y", silence="is_y")
    pair_m = pairing_head(layout, "pos", move(layout, "Mx", "Mk", -2.0), beta, "pair-Mx")
    read = bilinear_heads(layout, _reader(layout, "x"), _reader(layout, "Mk"),
                          move(layout, "ypair", "answer"), temp, variant, "w-dot-x", n_keys)
    return (LayerWeights(heads=(pair_y, pair_m), ffn=identity(layout, "Mx", 2.0, dst="Mk"), name="copy-y"),
            LayerWeights(heads=read, name="read-w"))


def newton_construction(d: int, N: int, alpha: float, temps: dict[str, Temperature],
                        variant: str = DEFAULT_VARIANT, x_bound: float = 100.0, pos_eps: float = 0.1,
                        seed: int = 0, register_bound: float = 1e8) -> Construction:
    """Theorem 4.1. ``temps`` holds one Temperature per linearised group: "pre", "loop", "post"."""
    check_sizes(d=d, N=N)
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} is invalid: expected a float in (0, 2/||S S^T||)")
    missing = {"pre", "loop", "post"} - set(temps)
    if missing:
        raise ValueError(f"temps is missing {sorted(missing)}: expected keys 'pre', 'loop', 'post'")
    P = quasi_orthogonal(N + 1, pos_eps, seed)
    lay = newton_layout(d, P.shape[1])
    n = 2 * N + 2                                  # keys every query sees
    gv = group_variants(variant)
    mirror = (newton_mirror_layer(lay, pos_eps),) if odd_values(variant) else ()
    weights = AlgoFormerWeights(
        lay,
        pre=newton_pre(lay, alpha, x_bound, pos_eps, temps["pre"], gv["pre"], register_bound, n),
        loop=mirror + (newton_step_layer(lay, temps["loop"], gv["loop"], register_bound, n),),
        post=newton_post(lay, pos_eps, temps["post"], gv["post"], n),
        notes={"algorithm": "newton", "d": d, "N": N, "alpha": alpha, "variant": variant,
               **{f"C_{k}": t.C for k, t in temps.items()}, **{f"c_{k}": t.c for k, t in temps.items()}},
    )
    return Construction(weights, P, answer=Readout("answer", 2 * N), iterate=Readout("Mx", slice(0, 2 * N, 2)),
                        assumptions={"N": N, "x_bound": x_bound, "alpha": alpha,
                                     "register_bound": register_bound})


def alpha_limit(x: np.ndarray) -> np.ndarray:
    """2 / ||S S^T||_2 per problem (x: (B, N, d)): alpha must lie strictly below it (Eq. 5)."""
    S = np.einsum("bni,bnj->bij", x, x)
    return 2.0 / np.linalg.norm(S, ord=2, axis=(1, 2)) ** 2


def loop_score_bound(x: np.ndarray, alpha: float) -> float:
    """max over problems, k and i, j of |x_i^T M_k x_j| (see the module docstring)."""
    S = np.einsum("bni,bnj->bij", x, x)
    lev = np.einsum("bni,bij,bnj->bn", x, np.linalg.inv(S), x)
    first = np.abs(alpha * np.einsum("bni,bij,bmj->bnm", x, S, x))
    return float(max(lev.max(), first.max()))
