"""Bounds on the emulation error after T loops, per problem and per loop.

A one-step bound (``constructions.linearise.error_bound``) says how far one linearised layer lands
from the exact step *from the same state*. After T loops the deviations of earlier loops are carried
by the algorithm's own map, which damps them (GD) or can amplify them (Newton-Schulz). These
functions propagate the one-step bounds through that map, with the norms taken from the float64
numpy run of the algorithm on the same problems; they are bounds up to the rounding of that float64
evaluation itself (relative 1e-15, far below anything they are compared with).

Both bound the deviation from the algorithm run on the prompt *as the model holds it* (in float32, the
data rounded to float32); the rounding of the prompt itself is a separate figure that the verifier
prints with the algorithm's own floor, and the sweep's ``bound_T`` column, measured against the
float64 reference, is meaningful only where it is well above that figure.

``gd_emulation_bound``: Lemma A.2's loop (GD, and the loops of Theorems 3.1/3.2 on features);
``newton_emulation_bound``: Theorem 4.1. The verifier prints the relative bound on the final
prediction beside the measured error (column ``bound_T``).
"""
from __future__ import annotations

import numpy as np

from algoformer.tasks import Regression
from constructions.linearise import Temperature, error_bound, error_bound_total
from constructions.newton import group_variants

from .references import Trajectory


def _newton_exact(x: np.ndarray, alpha: float, iters: int) -> list[np.ndarray]:
    """M_0 .. M_T of Newton-Schulz in float64, (B, d, d) each."""
    S = np.einsum("bni,bnj->bij", x, x)
    Ms = [alpha * S]
    for _ in range(iters):
        M = Ms[-1]
        Ms.append(2 * M - M @ S @ M)
    return Ms


def newton_emulation_bound(problem: Regression, alpha: float, iters: int, temps: dict[str, Temperature],
                           variant: str, n: int, unit_roundoff: float) -> dict[str, np.ndarray]:
    """Bounds on the emulated Theorem 4.1 AlgoFormer against exact Newton-Schulz, per problem.

    Returns ``iterate`` (B, T+1): e_k >= ||V~_k - V_k||_F, V_k = [M_k x_1 .. M_k x_N] the registers
    ``Mx`` of the x-tokens, and ``prediction`` (B, T+1): >= |answer~ - w_k^T x_test| when TF_post
    runs after loop k. Derivation (E_k = V~_k - V_k, X = [x_1 .. x_N] (d, N), G_k = X^T M_k X):

    TF_pre. Layer 1 is exact (pairing head at ``exact_pairing_beta``, gated copies). Layer 2 is the
    "pre" group: query x_j, key +-x_i, value alpha x_i, so per query the deviation is at most
    b_pre = error_bound(a_max = max|x_i.x_j|, s_v = alpha sum_i |x_i|); the register starts at 0 and
    ``zero_where`` is exact, so e_0 = sqrt(N) b_pre.

    TF_loop. The exact map is F(V) = 2V - V X^T V (the heads give -1/2 V X^T v_j, the FFN doubles
    exactly). Then F(V + E) - F(V) = E (I - G_k) + (I - M_k S) E - E X^T E, hence

        e_{k+1} <= (||I - G_k||_2 + ||I - M_k S||_2) e_k + ||X||_2 e_k^2 + 2 sqrt(N) b_k + 2 u r_k,

    with b_k the one-step bound at the *emulated* state (a_max <= max|x_i.v_j| + max|x_i| e_k,
    s_v <= 1/2 (sum_i |v_i| + sqrt(N) e_k)), and u r_k, r_k = ||V_k||_F + ||V_{k+1}||_F + e_k, the
    rounding of the residual add (the doubling and the zeroing are exact in floating point).
    ||I - G_k|| = 1 whenever N > d (G_k is 0 on the null space of X): errors there are carried, not
    damped; ||I - M_k S|| stays near 1 until M_k has converged in the smallest eigen-direction of S,
    so the factor is about 2 per loop for the first ~log2(kappa) loops: each loop's truncation and
    rounding error is doubled per loop while the small eigenvalues are still being found. With a
    ``sinh`` variant the loop's first layer (re-mirroring, a pairing head) is exact and the step's
    one-step bound is the sinh one (s_v over one copy of the values); pre and post use
    ``newton.group_variants``.

    TF_post. Layer 1 is exact (pairing heads, identity FFN). Layer 2, the "post" group, returns
    sum_i y_i (M x_i).x_test: the carried error is |x_test^T E_k y| <= |x_test| e_k |y|, plus
    b_post (a_max <= max_i |x_test.v_i| + |x_test| e_k, s_v = sum_i |y_i|).

    The recursion is worst-case in every factor: the one-step bounds are worst cases over the data,
    and it puts all of each step's error into the slowest eigen-direction. Measured errors sit far
    below it (``tests/test_bounds.py``). Once e_k ||X|| approaches 1 the quadratic term runs away and
    the bound is returned as inf (no finite bound), which is what happens with the O(theta) and O(theta^2)
    variants at useful temperatures and in float32: a finite T-loop bound needs a small per-step bound
    times 2^(loops until the smallest eigen-direction has converged).
    """
    x, y, xt = problem.x, problem.y[..., 0], problem.x_test
    N = x.shape[1]
    u = unit_roundoff
    g = _newton_geometry(x, xt, float(alpha), iters)
    xt_norm, y_norm, y_abs = np.linalg.norm(xt, axis=1), np.linalg.norm(y, axis=1), np.abs(y).sum(axis=1)

    gv = group_variants(variant)

    def one_step(group: str, a_max: np.ndarray, s_v: np.ndarray) -> np.ndarray:
        return error_bound_total(gv[group], temps[group], n, a_max, s_v, u)

    e = np.sqrt(N) * one_step("pre", g["gram"], alpha * g["xnorm"].sum(axis=1))
    its, preds = [], []
    for k in range(iters + 1):
        its.append(e)
        preds.append(xt_norm * e * y_norm + one_step("post", g["post_a"][k] + xt_norm * e, y_abs))
        if k == iters:
            break
        a_loop = g["a_loop"][k] + g["xnorm"].max(axis=1) * e
        b = one_step("loop", a_loop, 0.5 * (g["vsum"][k] + np.sqrt(N) * e))
        r = g["vfro"][k] + g["vfro"][k + 1] + e
        with np.errstate(over="ignore", invalid="ignore"):
            e = g["rho"][k] * e + g["X2"] * e ** 2 + 2 * np.sqrt(N) * b + 2 * u * r
        e = np.where(np.isfinite(e), e, np.inf)
    return {"iterate": np.stack(its, 1), "prediction": np.stack(preds, 1)}


_GEOMETRY: dict = {}


def _newton_geometry(x: np.ndarray, xt: np.ndarray, alpha: float, iters: int) -> dict:
    """The temperature-independent norms of the recursion (exact Newton-Schulz in float64), cached
    per problem set: a sweep evaluates the bound at ~15 temperatures on the same problems."""
    key = (hash(x.tobytes()), hash(xt.tobytes()), x.shape, alpha, iters)
    if key in _GEOMETRY:
        return _GEOMETRY[key]
    B, N, d = x.shape
    Ms = _newton_exact(x, alpha, iters)
    S = np.einsum("bni,bnj->bij", x, x)
    xT = x.transpose(0, 2, 1)
    Vs = [x @ M for M in Ms]                                             # rows v_i = M_k x_i (M_k symmetric)
    Gs = [V @ xT for V in Vs[:-1]]                                       # x_n^T M_k x_m
    g = {"gram": np.abs(x @ xT).max(axis=(1, 2)),
         "xnorm": np.linalg.norm(x, axis=2),
         "X2": np.linalg.norm(x, ord=2, axis=(1, 2)),
         "vsum": [np.linalg.norm(V, axis=2).sum(axis=1) for V in Vs],
         "vfro": [np.linalg.norm(V, axis=(1, 2)) for V in Vs],
         "post_a": [np.abs(np.einsum("bni,bi->bn", V, xt)).max(axis=1) for V in Vs],
         "a_loop": [np.abs(G).max(axis=(1, 2)) for G in Gs],
         "rho": [np.linalg.norm(np.eye(N) - G, ord=2, axis=(1, 2))
                 + np.linalg.norm(np.eye(d) - M @ S, ord=2, axis=(1, 2)) for G, M in zip(Gs, Ms)]}
    _GEOMETRY.clear()
    _GEOMETRY[key] = g
    return g


def gd_emulation_bound(f: Regression, ref: Trajectory, eta: float, temp, variant: str, n: int,
                       unit_roundoff: float) -> np.ndarray:
    """A bound on |emulated - numpy| of the GD iterate after every loop, per problem (B, T+1), for the
    loop of Lemma A.2 run on the features f (what ``gd``, ``representation`` and ``ar`` loop over).

    One emulated step is the exact step from the emulated state plus delta_k, |delta_k| <= b_k per
    query, b_k = ``linearise.error_bound`` with a_max = max |f_j . f_i| / n_s (data only: the scores do
    not depend on the iterate) and s_v = eta sum_i |r~_i| <= eta (sum_i |r_i| + sqrt(n_s) e_k) at the
    emulated state (r the numpy residuals, e_k the bound so far), plus the rounding of the residual
    add, u (|r_k| + |r_{k+1}|). On the sample tokens the exact map is r <- (I - eta K / n_s) r, K = F F^T,
    whose 2-norm is <= 1 for eta <= 2/lambda_max, so e_{k+1} <= e_k + sqrt(n_s) b_k + u (...). The test
    token adds eta/n_s (F f_test) . e each step: e_test,k+1 <= e_test,k + b_k + eta/n_s ||F f_test|| e_k
    + u (...). The bound is the larger of the two. With mirrored values (sinh) the y-tokens hold -r
    and s_v counts one copy (``linearise``).
    """
    ns = f.x.shape[1]
    pts = np.concatenate([f.x, f.x_test[:, None]], axis=1)
    a_max = float(np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / ns)
    unit = error_bound(variant, temp, n, a_max, 1.0, unit_roundoff)["total"]
    r = ref.iterates[:, :, :ns]                                             # (B, T+1, ns, m)
    s_ref = eta * np.abs(r).sum(axis=2).max(axis=-1)                        # (B, T+1)
    r_norm = np.linalg.norm(r.reshape(r.shape[0], r.shape[1], -1), axis=2)  # (B, T+1)
    t_abs = np.abs(ref.iterates[:, :, ns:]).reshape(r.shape[0], r.shape[1], -1).max(axis=2)
    g = eta / ns * np.linalg.norm(np.einsum("bni,bi->bn", f.x, f.x_test), axis=1)
    e_x = np.zeros(r.shape[0]); e_t = np.zeros(r.shape[0])
    out = []
    T = r.shape[1] - 1
    for k in range(T + 1):
        out.append(np.maximum(e_x, e_t))
        if k == T:
            break
        b = unit * (s_ref[:, k] + eta * np.sqrt(ns) * e_x)
        with np.errstate(over="ignore", invalid="ignore"):
            e_t = e_t + b + g * e_x + unit_roundoff * (t_abs[:, k] + t_abs[:, k + 1] + e_t)
            e_x = e_x + np.sqrt(ns) * b + unit_roundoff * (r_norm[:, k] + r_norm[:, k + 1] + e_x)
    return np.stack(out, 1)
