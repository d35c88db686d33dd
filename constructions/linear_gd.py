"""One GD step for in-context linear regression as ONE linear-attention layer; looped T times it is T
steps of GD (von Oswald et al. 2023, Prop. 1; Chen et al. 2024, arXiv 2410.11268, the looped form).

Problem (as in ``gd``): L(A) = 1/(2N) sum_i ||A x_i - y_i||^2, grad L(A) = 1/N sum_i (A x_i - y_i) x_i^T,
A_{k+1} = A_k - eta grad L(A_k), A_0 = 0. The layer is Eq. 1 with ``scores="linear"``: a head returns
sum_i (q_j . k_i) V h_i, no softmax, no normaliser (``algoformer.layer``).

Layout (tokens as rows, n = N + 1: the N samples, then the test token):

    token    z_i (i = 1..N)      test
    x        x_i                 0             keys and queries
    xq       0                   x_test        queries only: the test token is no key
    y        y_i                 0             the labels (read once, by TF_pre)
    r        A_k x_i - y_i       A_k x_test    the iterate register (the form ``gd``'s tokens hold)

TF_pre (1 layer, FFN only): r <- -y, i.e. A_0 x_i - y_i and A_0 x_test = 0 (``gadgets.identity``:
    relu(y) - relu(-y) = y exactly).
TF_loop (1 layer, 1 linear head, no FFN):
    W_Q = [I on x, I on xq],  W_K = [I on x],  W_O W_V = -(eta / N) on r -> r.
    Proof. At token j let q_j = x_j (sample) or x_test (test); k_i = x_i for samples, k = 0 for the test
    token (its x rows are 0), so the sum over keys runs over the samples only. The head adds
        sum_{i<=N} (q_j . x_i) (-(eta/N) r_i) = -eta (1/N sum_i (A_k x_i - y_i) x_i^T) q_j = -eta grad L(A_k) q_j
    to r_j = A_k q_j - y_j (y_test := 0), giving (A_k - eta grad L(A_k)) q_j - y_j = A_{k+1} q_j - y_j.
    x, xq and y are untouched, so the layer maps the layout onto itself and loops. QED.
TF_post: none; the answer A_T x_test is r on the test token.

Where this differs from the printed papers, and why:
  * von Oswald et al. update the label row in place (tokens (x_i, y_i), test (x_test, 0)): their register
    holds y - A x and the prediction is read as minus the test token's label row. The step is linear in
    the register, so the loop layer is the same either way; TF_pre copies -y into ``r`` so that the
    iterate has ``gd``'s sign and the answer needs no negation.
  * Chen et al. (after Ahn et al. 2023) keep the query token out of the keys with a mask
    M = diag(I_n, 0) inside the layer. Eq. 1 has only full and causal masks; here the layout does it:
    x_test sits in rows only W_Q reads, so the test token's key is exactly 0 (0 * v = 0 in floating point).
  * Their layer carries a factor 1/n; ours has no normaliser, and the construction puts eta / N into W_V
    (the same function for a prompt of N samples).
  * Nothing is approximated: unlike Lemma A.2's softmax heads there is no temperature, no sink and no
    truncation; the only error is rounding (``rounding_bound``).

Rounding (what ``rounding_bound`` computes; gamma_k = k u / (1 - k u), u the unit roundoff). One loop in
floating point: the selections of Q, K, V read 0/1 weights (exact); the scores and the sum over keys
(either order: Q K^T then times V, or K^T V first) are an n-term and a d-term dot product; then one
multiplication by fl(eta/N), its own rounding, and the residual add. So the computed step is the exact
one plus E_k with  |E_k|_j <= gamma_{n+d+3} (eta/N) sum_i (|q_j| . |x_i|) |r_i| + u |r_{k+1, j}|, and
    ||E_k|| <= gamma_{n+d+3} (eta/N) ||Xt||_F ||X||_F ||r_k|| + u ||r_{k+1}||     (Xt = X with x_test).
An error e in the state propagates as e_data <- P e_data with P = I - (eta/N) X X^T (||P||_2 <= 1 while
eta <= 2 / lambda_max(X^T X / N)), e_test <- e_test - (eta/N) x_test^T X^T e_data, so ||P~^j|| <= 1 + j s with
s = (eta/N) ||x_test|| ||X||_2, and after T loops ||e_T|| <= (T + s T (T - 1) / 2) max_k ||E_k||. Numpy GD in
A-form rounds differently (an n-term sum into A, then r = A x - y cancels: gamma_{d+1} (||A|| ||Xt|| +
||y||)); the bound adds that term, ||A_k||_F <= 2 ||A_LS||_F (A_k - A_LS contracts), so one formula bounds
either implementation's distance from exact GD.
"""
from __future__ import annotations

import numpy as np

from .gadgets import identity
from .layout import Layout
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, HeadWeights, LayerWeights


def linear_gd_layout(d: int, m: int = 1) -> Layout:
    lay = Layout()
    lay.add("x", d)
    lay.add("xq", d)
    lay.add("y", m)
    lay.add("r", m)
    return lay


def encode_linear_prompt(layout: Layout, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """x (B, N, d), y (B, N, m), x_test (B, d) -> tokens (B, N + 1, D), float64 (the table above)."""
    x, y, x_test = (np.asarray(a, float) for a in (x, y, x_test))
    if x.ndim != 3 or y.ndim != 3 or x_test.ndim != 2 or y.shape[:2] != x.shape[:2] or x_test.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"expected x (B, N, d), y (B, N, m), x_test (B, d); got shapes {x.shape}, {y.shape}, {x_test.shape}")
    if x.shape[2] != layout.size("x") or y.shape[2] != layout.size("y"):
        raise ValueError(f"data of dimension d={x.shape[2]}, m={y.shape[2]} does not fit the layout "
                         f"(d={layout.size('x')}, m={layout.size('y')})")
    B, N, _ = x.shape
    h = np.zeros((B, N + 1, layout.dim))
    h[:, :N, layout["x"]] = x
    h[:, :N, layout["y"]] = y
    h[:, N, layout["xq"]] = x_test
    return h


def linear_gd_step_layer(layout: Layout, eta: float, N: int) -> LayerWeights:
    """TF_loop: r_j <- r_j - (eta/N) sum_i (q_j . x_i) r_i = A_{k+1} q_j - y_j (module docstring)."""
    d = layout.size("x")
    query = np.zeros((d, layout.dim)); key = np.zeros((d, layout.dim))
    query[:, layout["x"]] = np.eye(d)
    query[:, layout["xq"]] = np.eye(d)
    key[:, layout["x"]] = np.eye(d)
    value = np.zeros((layout.dim, layout.dim))
    value[layout["r"], layout["r"]] = -(eta / N) * np.eye(layout.size("r"))
    return LayerWeights(heads=(HeadWeights(query, key, value, "gd-step"),), name="linear-gd-step", scores="linear")


def linear_gd_registers_layer(layout: Layout) -> LayerWeights:
    """TF_pre: r <- -y (A_0 = 0), exactly; no heads."""
    return LayerWeights(ffn=identity(layout, "y", -1.0, dst="r"), name="linear-gd-registers", scores="linear")


class LinearGDConstruction(Construction):
    def encode(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        N = np.asarray(x).shape[1]
        if N != self.assumptions["N"]:
            raise ValueError(f"N={N} samples, but the construction was built for N={self.assumptions['N']}")
        return encode_linear_prompt(self.layout, x, y, x_test)


def linear_gd_construction(d: int, N: int, eta: float, m: int = 1) -> LinearGDConstruction:
    """The linear looped transformer of GD: TF_pre forms r = -y, TF_loop is one GD step, no TF_post."""
    for name, v in (("d", d), ("N", N), ("m", m)):
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ValueError(f"{name}={v!r} is invalid: expected an integer >= 1")
    if not (np.isfinite(eta) and eta > 0):
        raise ValueError(f"eta={eta!r} is invalid: expected a finite float > 0")
    lay = linear_gd_layout(d, m)
    weights = AlgoFormerWeights(lay, pre=(linear_gd_registers_layer(lay),),
                                loop=(linear_gd_step_layer(lay, eta, N),), post=(),
                                notes={"algorithm": "linear-gd", "d": d, "m": m, "N": N, "eta": eta})
    return LinearGDConstruction(weights, np.zeros((N + 1, 0)), answer=Readout("r", N),
                                iterate=Readout("r", slice(0, N + 1)), assumptions={"N": N})


def _gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


def rounding_bound(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, eta: float, iters: int,
                   u: float) -> np.ndarray:
    """(B,) bound on max_k ||iterate_k - exact GD iterate_k|| (all N + 1 tokens, Frobenius) for the
    model or numpy GD in arithmetic of unit roundoff u (module docstring). Raises if eta > 2/lambda_max."""
    x, y, xt = (np.asarray(a, np.float64) for a in (x, y, x_test))
    B, N, d = x.shape
    lmax = np.linalg.eigvalsh(np.einsum("bni,bnj->bij", x, x) / N)[:, -1]
    if np.any(eta * lmax > 2):
        raise ValueError(f"eta={eta!r} is invalid for the bound: expected eta <= 2/lambda_max(X^T X/N) "
                         f"= {2 / lmax.max():.4g} (GD then does not contract)")
    X_F = np.linalg.norm(x, axis=(1, 2))
    Xt_F = np.sqrt(X_F ** 2 + np.linalg.norm(xt, axis=1) ** 2)
    A_ls = np.einsum("bnm,bnd->bmd", y, np.linalg.pinv(x).transpose(0, 2, 1))         # Y^T X^{+T}
    A_F = 2 * np.linalg.norm(A_ls, axis=(1, 2))
    y_F = np.linalg.norm(y, axis=(1, 2))
    r_max = y_F + A_F * Xt_F                          # ||r_k|| <= ||A_k x|| + ||y|| on every token
    s = eta / N * np.linalg.norm(xt, axis=1) * np.linalg.norm(x, ord=2, axis=(1, 2))
    g = _gamma(N + d + 3, u)
    step = g * (eta / N * Xt_F * X_F * r_max + A_F * Xt_F + y_F) + u * r_max
    T = iters
    return (T + s * T * max(T - 1, 0) / 2) * step
