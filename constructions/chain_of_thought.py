"""Theorem 3.3: chain of thought with MLPs, by filtering (TF_pre), GD (TF_loop) and leaky ReLU (TF_post).

Problem: chains s^0 = x, s^l = sigma(W_l s^{l-1}) (l = 1..L, sigma the leaky ReLU with slope a), the
W_l shared by the N sample chains and unknown. Given the samples and the test chain's prefix
x_test = s^0, s^1, .., s^l, predict s^{l+1} = sigma(W_{l+1} s^l). Since sigma is invertible and
piecewise linear, v_i = sigma^{-1}(s^{l+1}_i) = W_{l+1} s^l_i exactly: linear regression of v on
u = s^l, solved by Lemma A.2's GD (A_{k+1} = A_k - eta/N sum_i (A_k u_i - v_i) u_i^T, A_0 = 0); the
answer is sigma(A_T s^l_test).

Prompt (full attention; n = N(L+1) + L + 1 tokens; one token per state):

    token   x_1 s^1_1 .. s^L_1   x_2 .. s^L_N   x_test s^1 .. s^l   pad .. pad   sink
    s       the state (d)                        the test chain      0            0
    pos     P_i (Lemma A.1 signs of sample i)    P_{N+1}             0            P_{N+2}
    lay     e_ell: one-hot of the chain step ell = 0..L (position mod (L+1))     0            0
    is_test 1 on the last chain token (the query s^l), is_sink 1 on the sink, one 1 on every token

The test chain is padded to L tokens so that problems with different l share one length: a pad is
zero but for ``one`` (so that, like every token, it sees the sink's score C in the loop heads); no
score selects it (its keys are 0) and the registers it holds stay 0 (below).
Registers added: tl (L+1), nxt, prv, vinv (d), drop_in, drop_out, and Lemma A.2's x, xN, r, plus
answer, pred (d).

TF_pre (2 layers; 3 heads + FFN, then an FFN):
  1. head "find-l" (``gd.select_head``): every token attends to the query and copies its step one-hot:
        tl <- e_l   (l is found from the query's position, carried by its lay row)
     heads "state+1", "state-1": query (beta/m) P_i + beta e_{ell+-1}, key (pos, lay): token (i, ell)
        attends to (i, ell +- 1), score 2 beta against <= (2 - eps) beta for every other token
        (Lemma A.1 margin eps): nxt <- s^{ell+1}_i, prv <- s^{ell-1}_i, exact (beta eps >= 800)
     FFN: drop_in <- 1 - sum_k relu(lay_k + tl_k - 1)       (exact AND of 0/1 rows: 0 iff ell == l)
          drop_out <- 1 - sum_k relu(lay_{k+1} + tl_k - 1)  (0 iff ell == l + 1)
          vinv <- sigma^{-1}(nxt) = relu(nxt) - (1/a) relu(-nxt)  (``gadgets.leaky_relu_layer``, exact)
  2. FFN: Lemma A.2's registers, by gated copies (exact while |s| <= x_bound):
          x <- s where drop_in = 0 (the pairs' inputs s^l_i and the query s^l)
          xN <- s / N, r <- -vinv where drop_in = 0 and not the query (r = A_0 u_i - v_i, A_0 = 0)
          xN <- -prv / N where drop_out = 0: the target token of pair i holds the negated key
             -s^l_i / N with r = 0, so the key set is symmetric, as ``gd``'s y-tokens make it for the
             ``mirror`` variants (the sink variants do not mind: the value there is 0)
TF_loop: ``gd.gd_step_layer`` unchanged (Lemma A.2 for m = d outputs): r <- A_{k+1} u - v on the
  kept tokens, A_{k+1} s^l at the query; every other token has x = xN = 0 and stays 0.
TF_post (1 layer, 1 head + FFN): ``gd.gd_answer_layer`` moves r of the query onto the sink:
  answer <- A_T s^l; FFN: pred <- sigma(answer) (``leaky_relu_layer``).

Counts: TF_pre 2 layers (3 heads + FFN, FFN), TF_loop 1 layer 2 heads (``odd``), TF_post 1 layer 1
head. The paper's Theorem 3.3: TF_pre "a seven-layer two-head transformer" (Li et al. 2023, Lemma 5,
not given), TF_loop 1 layer 2 heads, TF_post 1 layer 1 head.

Where this differs from the printed proof, and why:
  * The filter of Li et al. is cited, not given; here it is 2 layers, because the step one-hot of
    every token is a positional row (as the paper's positional indices are) and the "keep" test is
    an exact ReLU AND of two one-hots; pairing (s^l_i, s^{l+1}_i) is a Lemma A.1 head with a shifted
    step one-hot (Lemma A.3's shifted embeddings, within one chain).
  * Eq. 7 prints the kept pairs on two tokens (s^{l-1}_i over s^l_i); Lemma A.2 needs the input and
    the residual on one token, so the target is moved onto its input's token.
  * "Without loss of generality s^l_i = W_l s^{l-1}_i": here it is made true by applying sigma^{-1}
    exactly to the targets in TF_pre, and sigma is applied in TF_post (the paper's TF_post only
    moves the result).
  * The paper's indices shift between l and l-1 (Eq. 7 keeps s^{l-1}, s^l for the query s^{l-1}); we
    write the query as s^l and predict s^{l+1}.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embeddings import exact_pairing_beta, quasi_orthogonal
from .gadgets import gated_copy, leaky_relu_layer
from .gd import check_sizes, gd_answer_layer, gd_step_layer, move, select_head
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

COT_LAYERS = 6   # the paper's MLP depth L


def cot_layout(d: int, L: int, pos_dim: int) -> Layout:
    lay = Layout()
    for name, size in (("s", d), ("pos", pos_dim), ("lay", L + 1), ("is_test", 1), ("is_sink", 1), ("one", 1),
                       ("tl", L + 1), ("nxt", d), ("prv", d), ("vinv", d), ("drop_in", 1), ("drop_out", 1), ("x", d), ("xN", d), ("r", d),
                       ("answer", d), ("pred", d)):
        lay.add(name, size)
    return lay


def cot_positions(N: int, L: int) -> tuple[int, int]:
    """(first token of the test chain, number of tokens n): samples, test chain + pads (L), sink."""
    return N * (L + 1), N * (L + 1) + L + 1


def encode_cot(layout: Layout, P: np.ndarray, chains: np.ndarray, steps: np.ndarray, test: np.ndarray) -> np.ndarray:
    """chains (B, N, L+1, d), steps (B,) ints l in [0, L-1], test (B, L, d) (rows after l unused)
    -> tokens (B, n, D)."""
    chains, test, steps = np.asarray(chains, float), np.asarray(test, float), np.asarray(steps)
    if chains.ndim != 4 or test.ndim != 3 or steps.shape != chains.shape[:1]:
        raise ValueError(f"expected chains (B, N, L+1, d), steps (B,), test (B, L, d); got "
                         f"{chains.shape}, {steps.shape}, {test.shape}")
    B, N, L1, d = chains.shape
    L = L1 - 1
    if d != layout.size("s") or L1 != layout.size("lay") or test.shape != (B, L, d):
        raise ValueError(f"shapes disagree with the layout (d={layout.size('s')}, L={layout.size('lay') - 1}): "
                         f"chains {chains.shape}, test {test.shape}")
    if not np.all((steps >= 0) & (steps <= L - 1)):
        raise ValueError(f"steps must lie in [0, L-1] = [0, {L - 1}]: the query s^l predicts s^(l+1), l+1 <= L")
    if P.shape[0] < N + 2:
        raise ValueError(f"N={N} samples but the construction has embeddings for {P.shape[0] - 2}")
    t0, n = cot_positions(N, L)
    h = np.zeros((B, n, layout.dim))
    Pf = P.astype(float)
    h[:, :t0, layout["s"]] = chains.reshape(B, t0, d)
    h[:, :t0, layout["pos"]] = np.repeat(Pf[:N], L1, axis=0)
    h[:, :t0, layout["lay"]] = np.tile(np.eye(L1), (N, 1))
    h[:, :, layout.row("one")] = 1.0
    for ell in range(L):
        on = steps >= ell                                      # (B,) real test-chain token, else a pad
        h[on, t0 + ell, layout["s"]] = test[on, ell]
        h[on, t0 + ell, layout["pos"]] = Pf[N]
        h[on, t0 + ell, layout["lay"].start + ell] = 1.0
    h[np.arange(B), t0 + steps, layout.row("is_test")] = 1.0
    h[:, n - 1, layout["pos"]] = Pf[N + 1]
    h[:, n - 1, layout.row("is_sink")] = 1.0
    return h


def chain_shift_head(layout: Layout, beta: float, shift: int, dst: str) -> HeadWeights:
    """Token (i, ell) attends to (i, ell + shift) and copies its state into ``dst``: query
    (beta/m) P_i + beta e_{ell+shift}, key (pos, lay). Score 2 beta there, <= (2 - eps) beta elsewhere."""
    m, L1 = layout.size("pos"), layout.size("lay")
    q = np.zeros((m + L1, layout.dim)); k = np.zeros((m + L1, layout.dim))
    q[:m, layout["pos"]] = (beta / m) * np.eye(m)
    k[:m, layout["pos"]] = np.eye(m)
    lay0 = layout["lay"].start
    for ell in range(L1):
        if 0 <= ell + shift < L1:
            q[m + ell, lay0 + ell] = beta
            k[m + ell, lay0 + ell + shift] = 1.0
    return HeadWeights(q, k, move(layout, "s", dst), f"state{shift:+d}")


def step_test(layout: Layout, dst: str, offset: int) -> FFNWeights:
    """dst <- 1 - sum_k relu(lay_{k+offset} + tl_k - 1): 0 where the token's step is l + offset, else
    1 (an exact AND of 0/1 rows; the bias makes it 1 on the pads too)."""
    L1 = layout.size("lay")
    ks = [k for k in range(L1) if 0 <= k + offset < L1]
    w1 = np.zeros((len(ks), layout.dim)); w2 = np.zeros((layout.dim, len(ks))); b2 = np.zeros(layout.dim)
    for u, k in enumerate(ks):
        w1[u, layout["lay"].start + k + offset] = 1.0
        w1[u, layout["tl"].start + k] = 1.0
    w2[layout.row(dst), :] = -1.0
    b2[layout.row(dst)] = 1.0
    return FFNWeights(w1, -np.ones(len(ks)), w2, b2)


def filter_layers(layout: Layout, N: int, slope: float, x_bound: float, pos_eps: float) -> tuple[LayerWeights, ...]:
    """TF_pre: find l, pair each state with its neighbours, keep the pairs of step l, invert sigma."""
    d = layout.size("s")
    beta = exact_pairing_beta(layout.size("pos"), pos_eps)
    find_l = select_head(layout, "one", "is_test", move(layout, "lay", "tl"), "find-l")
    heads = (find_l, chain_shift_head(layout, beta, +1, "nxt"), chain_shift_head(layout, beta, -1, "prv"))
    invert = leaky_relu_layer(layout, "nxt", "vinv", np.eye(d), np.zeros(d), 1.0 / slope)
    ffn = FFNWeights.concat(step_test(layout, "drop_in", 0), step_test(layout, "drop_out", 1), invert)
    first = LayerWeights(heads=heads, ffn=ffn, name="find-l-and-pair")
    gates = FFNWeights.concat(gated_copy(layout, "s", "x", "drop_in", x_bound),
                              gated_copy(layout, "s", "xN", ("drop_in", "is_test"), x_bound / N, 1.0 / N),
                              gated_copy(layout, "prv", "xN", "drop_out", x_bound / N, -1.0 / N),
                              gated_copy(layout, "vinv", "r", ("drop_in", "is_test"), x_bound / slope, -1.0))
    return first, LayerWeights(ffn=gates, name="keep-step-l")


def cot_post(layout: Layout, slope: float) -> LayerWeights:
    d = layout.size("answer")
    read = gd_answer_layer(layout)
    return LayerWeights(heads=read.heads, ffn=leaky_relu_layer(layout, "answer", "pred", np.eye(d), np.zeros(d), slope),
                        name="answer-sigma")


def cot_construction(d: int, N: int, eta: float, temp: Temperature, L: int = COT_LAYERS,
                     slope: float = 0.01, variant: str = DEFAULT_VARIANT, x_bound: float = 100.0,
                     pos_eps: float = 0.1, seed: int = 0, register_bound: float = 1e8) -> Construction:
    """Theorem 3.3 for chains of L leaky-ReLU layers (slope ``slope``) of width d, N sample chains."""
    check_sizes(d=d, N=N, L=L)
    if not eta > 0:
        raise ValueError(f"eta={eta!r} is invalid: expected a float > 0")
    if not 0 < slope < 1:
        raise ValueError(f"slope={slope!r} is invalid: expected a float in (0, 1)")
    P = quasi_orthogonal(N + 2, pos_eps, seed)
    lay = cot_layout(d, L, P.shape[1])
    t0, n = cot_positions(N, L)
    mirror_keys = {"n_keys": n} if variant.endswith("+mirror") else {}     # every query sees all n tokens
    weights = AlgoFormerWeights(
        lay, pre=filter_layers(lay, N, slope, x_bound, pos_eps),
        loop=(gd_step_layer(lay, eta, temp, variant, register_bound, **mirror_keys),),
        post=(cot_post(lay, slope),),
        notes={"algorithm": "cot", "d": d, "N": N, "L": L, "eta": eta, "slope": slope, "C": temp.C,
               "c": temp.c, "variant": variant},
    )
    return CoTConstruction(weights, P, answer=Readout("pred", n - 1), iterate=Readout("r", slice(0, n - 1)),
                           assumptions={"N": N, "L": L, "x_bound": x_bound, "slope": slope,
                                        "register_bound": register_bound})


@dataclass(frozen=True)
class CoTConstruction(Construction):
    def encode(self, chains: np.ndarray, steps: np.ndarray, test: np.ndarray) -> np.ndarray:
        """The sweep's (x, y, x_test) are (sample chains, steps l, test chain): see ``verify``."""
        N = np.asarray(chains).shape[1]
        if N != self.assumptions["N"]:
            raise ValueError(f"N={N} sample chains, but the construction was built for N={self.assumptions['N']}")
        return encode_cot(self.layout, self.pos, chains, steps, test)
