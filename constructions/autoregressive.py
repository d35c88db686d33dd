"""Theorem 3.2: AR(q) with representation, x_{t+1} = A Phi*([x_{t+1-q}, ..., x_t]) + noise.

From the sequence x_1 .. x_N the AlgoFormer predicts x_{N+1} = A_T Phi*([x_{N+1-q}, ..., x_N]), A_T
the T-th gradient-descent iterate on the regression that AR(q) induces (``tasks.ar_regression``):

    samples   t = q+1 .. N:  features Phi*([x_{t-q}, ..., x_{t-1}]),  label x_t      (N - q of them)
    query     features Phi*([x_{N+1-q}, ..., x_N])

The indexing, made exact. The printed proof leaves Phi*(x_{t+1-q:t}), the window *ending at* t, on
token t; that window predicts x_{t+1}, which sits on the *next* token, so no token holds a whole
(features, label) pair and Lemma A.2 cannot run. Here token t copies the q tokens *before* it
(Lemma A.3, shifts 1..q), so it holds the window that predicts its own x_t: every pair lies on one
token. The query window [x_{N+1-q}, ..., x_N] then belongs to a token after x_N: the prompt gets a
test token (x = 0) at position N + 1, and a sink for the linearised heads after it.
``tests/test_autoregressive.py`` checks this on a sequence where either off-by-one changes the answer.

Prompt and layout (0-based token t holds x_{t+1}; ``copy`` draws the prompt rows):

    token        0 .. q-1             q .. N-1                  N (test)                 N+1 (sink)
    xt           x_1 .. x_q           x_{q+1} .. x_N            0                        0
    win          zero-padded          [x_{t+1-q}, ..., x_t]     [x_{N+1-q}, ..., x_N]    (not used)
    x            0                    Phi*(win)                 Phi*(win)                0
    xN           0                    Phi*(win) / (N - q)       0                        0
    r            0                    A_k Phi*(win) - x_{t+1}   A_k Phi*(win)            0
    answer                                                                               A_T Phi*(query)

TF_pre (L + 3 layers): the copy block (2 layers, q heads), Phi* as in ``representation`` (L FFN-only
    layers win -> phi1 -> ... -> x), then one FFN-only layer that keeps x on samples and the test
    token (0 elsewhere), and forms xN = x / (N - q) and r = A_0 x - x_t = -x_t on samples only
    (gated by the copy block's no_prev{q} row: tokens t < q lack a full window).
    With partner tokens (mirror variants) the partners of samples also get xN = -x / (N - q).
TF_loop (1 layer): Lemma A.2 (``gd.gd_step_layer``); TF_post (1 layer): ``gd.gd_answer_layer``.

Where this differs from the printed proof, and why:
  * The pairing above; the printed estimator also sums over t = 1..q with x_t = 0 padding, a model
    the data do not come from (their first q values are drawn N(0, I)): we fit t = q+1..N only.
  * Two extra tokens (test, sink) and one extra pre layer (the copy block's exact zeroing, see
    ``copy``); no positional pairing head is needed, since each label x_t already sits on its token.
  * With a ``+mirror`` variant of ``linearise`` (no sink score; the key set must be symmetric), every
    value token is followed by a partner token (``copy`` partners: xt = 0, the same position rows),
    which gathers the same window and features and holds the negated key -Phi*(win)/(N - q), with
    query 0 and value r = 0: the role of the y-tokens in the regression prompt. The prompt then has
    2N + 2 tokens; sink variants use the N + 2 of the table above.
"""
from __future__ import annotations

from algoformer.tasks import MLP

from .copy import SequenceConstruction, copy_block, default_beta, gate, n_embeddings, sequence_layout
from .embeddings import min_margin, quasi_orthogonal
from .gadgets import gated_copy, zero_where
from .gd import check_sizes, gd_answer_layer, gd_step_layer
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature
from .prompt import Readout
from .representation import check_mlp, mlp_layers, mlp_registers
from .weights import AlgoFormerWeights, FFNWeights, LayerWeights


def ar_layout(d: int, q: int, phi: MLP, pos_dim: int, partners: bool = False) -> tuple[Layout, list[str]]:
    lay = sequence_layout(d, q, pos_dim, test_slot=True, partners=partners)
    names = mlp_registers(lay, phi, "win", "x")
    lay.add("xN", lay.size("x"))
    lay.add("r", d)
    lay.add("answer", d)
    return lay, names


def ar_registers_layer(layout: Layout, q: int, n_samples: int, x_bound: float) -> LayerWeights:
    """x kept on samples and the test token; xN = x / (N - q) and r = -x_t on samples only; with
    partner tokens, xN = -x / (N - q) on the partners of samples (the mirrored keys)."""
    partner = ("is_partner",) if "is_partner" in layout else ()
    not_sample = (gate(q), "is_test", "is_sink") + partner
    parts = [zero_where(layout, "x", (gate(q), "is_sink") + partner, x_bound),
             gated_copy(layout, "x", "xN", off=not_sample, bound=x_bound / n_samples, scale=1.0 / n_samples),
             gated_copy(layout, "xt", "r", off=not_sample, bound=x_bound, scale=-1.0)]
    if partner:
        parts.append(gated_copy(layout, "x", "xN", off=(gate(q), "is_test", "is_sink", "is_x"),
                                bound=x_bound / n_samples, scale=-1.0 / n_samples))
    return LayerWeights(ffn=FFNWeights.concat(*parts), name="ar-registers")


def sample_tokens(N: int, q: int, partners: bool = False) -> list[int]:
    """Tokens of the N - q samples, then the test token: where the GD iterate is read."""
    k = 2 if partners else 1
    return [k * t for t in range(q, N)] + [k * N]


def ar_construction(phi: MLP, q: int, N: int, eta: float, temp: Temperature, variant: str = DEFAULT_VARIANT,
                    x_bound: float = 100.0, pos_eps: float = 0.1, seed: int = 0, register_bound: float = 1e8,
                    beta: float | None = None) -> SequenceConstruction:
    """Theorem 3.2. Phi*: R^{q d} -> R^{d_phi}; ``x_bound`` bounds |x_t| and |Phi*(window)|."""
    check_sizes(q=q, N=N)
    if N <= q:
        raise ValueError(f"N={N} is invalid: expected N > q={q} (at least one full window)")
    if not phi.weights or phi.weights[0].shape[1] % q:
        raise ValueError(f"phi takes inputs of size {phi.weights[0].shape[1] if phi.weights else 0}: "
                         f"expected a multiple of q={q} (windows of q values)")
    d = phi.weights[0].shape[1] // q
    check_mlp(phi, q * d)
    if not eta > 0:
        raise ValueError(f"eta={eta!r} is invalid: expected a float > 0")
    if not x_bound > 0:
        raise ValueError(f"x_bound={x_bound!r} is invalid: expected a float > 0")
    partners = variant.endswith("+mirror")
    n = (2 * N if partners else N) + 2
    P = quasi_orthogonal(n_embeddings(N, q, True), pos_eps, seed)
    lay, names = ar_layout(d, q, phi, P.shape[1], partners)
    beta = default_beta(P.shape[1], pos_eps) if beta is None else beta
    weights = AlgoFormerWeights(
        lay,
        pre=copy_block(lay, q, beta, x_bound) + mlp_layers(lay, phi, names)
            + (ar_registers_layer(lay, q, N - q, x_bound),),
        loop=(gd_step_layer(lay, eta, temp, variant, register_bound, n_keys=n),),
        post=(gd_answer_layer(lay),),
        notes={"algorithm": "ar", "d": d, "q": q, "d_phi": lay.size("x"), "L": len(phi.weights), "N": N,
               "eta": eta, "C": temp.C, "c": temp.c, "variant": variant, "beta": beta, "tokens": n},
    )
    return SequenceConstruction(weights, P, answer=Readout("answer", n - 1), iterate=Readout("r", sample_tokens(N, q, partners)),
                                q=q, test_slot=True,
                                assumptions={"N": N, "q": q, "x_bound": x_bound, "register_bound": register_bound,
                                             "beta": beta, "margin": min_margin(P)})
