"""Algorithms for Theorem 4.2 (``decoder-gd``) and Theorem 3.3 (``cot``): problems, checks, references.

    decoder-gd   every x-token i holds w^i_k for its prefix loss (Eq. 6); reference: numpy prefix GD,
                 compared at every position: iterates (B, T+1, N+1, d), predictions w^i_k^T x_i (B, T+1, N+1, 1)
    cot          chain of thought with a 6-layer leaky-ReLU MLP (``tasks.chain_of_thought``), query at
                 step l drawn per problem; reference: numpy GD on (s^l_i, leaky^{-1}(s^{l+1}_i)), the
                 prediction leaky(A_k s^l_test); iterates: the register r at every prompt token

A CoT problem rides in a ``CoTProblem`` with the four fields the sweep subsets (x, y, x_test,
y_test), so the sweep and the emulator serve it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algoformer import tasks
from algoformer.tasks import Regression
from constructions.causal_gd import causal_gd_construction
from constructions.chain_of_thought import COT_LAYERS, cot_construction, cot_positions
from constructions.scores import decoder_score_bounds, prefix_moments

from .interface import Algorithm, Options
from .interface import bound_violations as _bound_violations
from .references import Trajectory


# -- Theorem 4.2: GD with causal attention ----------------------------------------------------------
def decoder_gd_reference(p: Regression, iters: int, eta: float) -> Trajectory:
    """w^i_{k+1} = w^i_k - eta (S_i w^i_k - b_i) from w^i_0 = 0, at every position i (Eq. 6)."""
    X, S, b = prefix_moments(p)
    w = np.zeros_like(X)
    its, preds = [], []
    for _ in range(iters + 1):
        its.append(w)
        preds.append(np.einsum("bnd,bnd->bn", w, X)[..., None])
        w = w - eta * (np.einsum("bnij,bnj->bni", S, w) - b)
    return Trajectory(np.stack(its, 1), np.stack(preds, 1))


def _prefix_lmax(p: Regression) -> np.ndarray:
    """(B,) max over positions of lambda_max(S_i): the prefix losses' largest curvature."""
    return np.linalg.eigvalsh(prefix_moments(p)[1])[..., -1].max(axis=1)


def _decoder_violations(p: Regression, opts: Options, eta: float) -> np.ndarray:
    v = _bound_violations(p, opts)
    bad = eta >= 2.0 / _prefix_lmax(p)
    return np.where((v == "") & bad, "eta >= 2/max_i lambda_max(S_i): GD on a prefix diverges", v)



def _decoder_verdict(rows, n: int):
    from .report import verdict_lines        # here: report imports the sweep, which imports algorithms
    verdict = verdict_lines(rows, n)
    verdict.notes.append(
        "decoder-gd: the loop heads are a mirrored mean in every variant (no sink; the count 1/(i-1) is the "
        "softmax normaliser); the column C is the read-out's sink score (C = ln(20n) + P ln(1/c) where a "
        "mirror schedule gives 0), so the floor lines above describe the read-out's bound")
    return verdict


DECODER_GD = Algorithm(
    name="decoder-gd", summary="gradient descent with causal attention at every position (Lemma A.5, Thm 4.2)",
    step_name="eta",
    draw=lambda rng, o: tasks.linear_regression(rng, o.problems, o.N, o.d, 1),
    choose_step=lambda p: float(1.0 / _prefix_lmax(p).max()),
    violations=_decoder_violations,
    score_bounds=decoder_score_bounds,
    build=lambda o, eta, temps, variant: causal_gd_construction(o.d, o.N, eta, temps, variant,
                                                                register_bound=o.register_bound),
    reference=decoder_gd_reference,
    verdict=_decoder_verdict,
)


# -- Theorem 3.3: chain of thought with MLPs ----------------------------------------------------
@dataclass(frozen=True)
class CoTProblem:
    """Field names as ``Regression`` (the sweep subsets them): x = sample chains (B, N, L+1, d),
    y = the step l of the query (B,), x_test = the test chain x_test, s^1 .. s^{L-1} (B, L, d) with the
    rows after l zero (never shown to the model), y_test = the true next state s^{l+1} (B, d)."""
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def draw_cot(rng: np.random.Generator, opts: Options, L: int = COT_LAYERS) -> CoTProblem:
    states, _ = tasks.chain_of_thought(rng, opts.problems, opts.N, opts.d, L)
    steps = rng.integers(0, L, size=opts.problems)                # query s^l, l in [0, L-1]
    test = states[:, -1, :L].copy()
    test[np.arange(L)[None, :] > steps[:, None]] = 0.0
    return CoTProblem(states[:, :-1], steps, test, states[np.arange(opts.problems), -1, steps + 1])


def _cot_pairs(p: CoTProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u_i = s^l_i (B, N, d), v_i = sigma^{-1}(s^{l+1}_i), and the query s^l (B, d)."""
    b = np.arange(len(p.y))
    u, nxt = p.x[b, :, p.y], p.x[b, :, p.y + 1]
    return u, tasks.leaky_relu_inverse(nxt), p.x_test[b, p.y]


def cot_reference(p: CoTProblem, iters: int, eta: float) -> Trajectory:
    """A_{k+1} = A_k - eta/N sum_i (A_k u_i - v_i) u_i^T, A_0 = 0; prediction sigma(A_k s^l).
    Iterates as the tokens hold them: r = A_k u_i - v_i on the token of s^l_i, A_k s^l on the query,
    0 on every other prompt token (B, T+1, n-1, d)."""
    u, v, q = _cot_pairs(p)
    B, N, L1, d = p.x.shape
    t0, n = cot_positions(N, L1 - 1)
    b = np.arange(B)
    A = np.zeros((B, d, d))
    its, preds = [], []
    for _ in range(iters + 1):
        r = np.einsum("bij,bnj->bni", A, u) - v
        tok = np.zeros((B, n - 1, d))
        tok[b[:, None], np.arange(N)[None, :] * L1 + p.y[:, None]] = r
        tok[b, t0 + p.y] = np.einsum("bij,bj->bi", A, q)
        its.append(tok)
        preds.append(tasks.leaky_relu(np.einsum("bij,bj->bi", A, q)))
        A = A - eta * np.einsum("bni,bnj->bij", r, u) / N
    return Trajectory(np.stack(its, 1), np.stack(preds, 1))


def _cot_lmax(p: CoTProblem) -> np.ndarray:
    u = _cot_pairs(p)[0]
    return np.linalg.eigvalsh(np.einsum("bni,bnj->bij", u, u) / u.shape[1])[:, -1]


def _cot_violations(p: CoTProblem, opts: Options, eta: float) -> np.ndarray:
    big = np.maximum(np.abs(p.x).max(axis=(1, 2, 3)), np.abs(p.x_test).max(axis=(1, 2)))
    v = np.where(big > opts.x_bound, np.char.add("max|s| > x_bound=", str(opts.x_bound)), "")
    bad = eta >= 2.0 / _cot_lmax(p)
    return np.where((v == "") & bad, "eta >= 2/lambda_max(S_l/N): GD diverges", v)


def _cot_scores(p: CoTProblem, eta: float) -> dict[str, float]:
    u, _, q = _cot_pairs(p)
    pts = np.concatenate([u, q[:, None]], axis=1)
    return {"loop": float(np.abs(np.einsum("bni,bmi->bnm", pts, u)).max() / u.shape[1])}


COT = Algorithm(
    name="cot", summary="chain of thought with a 6-layer leaky-ReLU MLP: filter, invert, GD, sigma (Thm 3.3)",
    step_name="eta",
    draw=draw_cot,
    choose_step=lambda p: float(1.0 / _cot_lmax(p).max()),
    violations=_cot_violations,
    score_bounds=_cot_scores,
    build=lambda o, eta, temps, variant: cot_construction(o.d, o.N, eta, temps["loop"], variant=variant,
                                                          x_bound=o.x_bound, register_bound=o.register_bound),
    reference=cot_reference,
)

DECODER_ALGORITHMS = (DECODER_GD, COT)
