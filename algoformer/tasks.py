"""The paper's in-context tasks (Sections 3-5): seeded numpy generators shared by training,
the constructions' encoders and the verifier. One place, so that every component sees the same data.

Shapes: B problems, N in-context samples, d input dim, m output dim, q AR order, L MLP depth.
Every generator takes a ``numpy.random.Generator``; nothing draws from global state.

Defaults follow the paper's experiments: d = 20, N = 40; Phi* a 3-layer leaky-ReLU MLP;
AR(q) with q = 3 and Phi*: R^{qd} -> R^d; chain of thought with a 6-layer leaky-ReLU MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAKY_SLOPE = 0.01  # negative slope of the leaky ReLU in Phi* (the paper does not fix it)


def leaky_relu(z: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    return np.where(z >= 0, z, slope * z)


def leaky_relu_inverse(z: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    return np.where(z >= 0, z, z / slope)


@dataclass(frozen=True)
class Regression:
    """In-context regression problems: y_i = f(x_i) (+ noise), queried at x_test."""
    x: np.ndarray        # (B, N, d)
    y: np.ndarray        # (B, N, m)
    x_test: np.ndarray   # (B, d)
    y_test: np.ndarray   # (B, m) noiseless target at x_test

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        B, N, d = self.x.shape
        return B, N, d, self.y.shape[-1]


@dataclass(frozen=True)
class MLP:
    """Phi*(x) = leaky(W_L ... leaky(W_1 x + b_1) ... + b_L): every layer followed by leaky ReLU."""
    weights: tuple[np.ndarray, ...]   # W_l: (d_l, d_{l-1})
    biases: tuple[np.ndarray, ...]    # b_l: (d_l,)
    slope: float = LEAKY_SLOPE

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for W, b in zip(self.weights, self.biases):
            x = leaky_relu(x @ W.T + b, self.slope)
        return x


def random_mlp(rng: np.random.Generator, widths: list[int], slope: float = LEAKY_SLOPE,
               bias: bool = True) -> MLP:
    """Layers widths[0] -> widths[1] -> ...; weights N(0, 1/fan_in) so activations stay O(1)."""
    Ws = tuple(rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(widths[:-1], widths[1:]))
    bs = tuple((0.1 * rng.standard_normal(o) if bias else np.zeros(o)) for o in widths[1:])
    return MLP(Ws, bs, slope)


def _check_positive(**kw) -> None:
    for name, v in kw.items():
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ValueError(f"{name}={v!r} is invalid: expected an integer >= 1")


def linear_regression(rng: np.random.Generator, B: int, N: int = 40, d: int = 20, m: int = 1,
                      noise: float = 0.0) -> Regression:
    """x ~ N(0, I_d), A ~ N(0, I) (m x d), y = A x + noise * N(0, I_m)."""
    _check_positive(B=B, N=N, d=d, m=m)
    if noise < 0:
        raise ValueError(f"noise={noise!r} is invalid: expected a float >= 0")
    x = rng.standard_normal((B, N + 1, d))
    A = rng.standard_normal((B, m, d))
    y = np.einsum("bmd,bnd->bnm", A, x)
    y_obs = y[:, :N] + noise * rng.standard_normal((B, N, m))
    return Regression(x[:, :N], y_obs, x[:, N], y[:, N])


def representation_regression(rng: np.random.Generator, B: int, phi: MLP, N: int = 40, d: int = 20,
                              m: int = 1, noise: float = 0.0) -> Regression:
    """Regression with representation (Thm 3.1): y = A Phi*(x) + noise, Phi* shared by all problems."""
    _check_positive(B=B, N=N, d=d, m=m)
    x = rng.standard_normal((B, N + 1, d))
    feats = phi(x)
    A = rng.standard_normal((B, m, feats.shape[-1]))
    y = np.einsum("bmd,bnd->bnm", A, feats)
    y_obs = y[:, :N] + noise * rng.standard_normal((B, N, m))
    return Regression(x[:, :N], y_obs, x[:, N], y[:, N])


def ar_sequence(rng: np.random.Generator, B: int, phi: MLP, q: int = 3, N: int = 40, d: int = 20,
                noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """AR(q) with representation (Thm 3.2): x_{t+1} = A Phi*([x_{t+1-q}, ..., x_t]) + noise.

    Returns (seq (B, N + 1, d), A (B, d, d_phi)): seq[:, :N] is the prompt, seq[:, N] the next value.
    The first q values are drawn N(0, I). The window is ordered oldest first.

    Differs from the paper: A has entries N(0, 1/d_phi), not N(0, 1). With the paper's A ~ N(0, I)
    each step multiplies the state's size by about sqrt(d_phi) times Phi*'s gain, so sequences of
    N = 40 steps overflow or are dominated by their last values; the 1/sqrt(d_phi) scaling keeps the
    map's gain near 1 (the usual scaling for random linear recurrences).
    """
    _check_positive(B=B, q=q, N=N, d=d)
    if N <= q:
        raise ValueError(f"N={N!r} is invalid: expected an integer > q={q}")
    A = rng.standard_normal((B, d, phi.weights[-1].shape[0])) / np.sqrt(phi.weights[-1].shape[0])
    seq = np.zeros((B, N + 1, d))
    seq[:, :q] = rng.standard_normal((B, q, d))
    for t in range(q, N + 1):
        window = seq[:, t - q:t].reshape(B, q * d)
        seq[:, t] = np.einsum("bij,bj->bi", A, phi(window)) + noise * rng.standard_normal((B, d))
    return seq, A


def chain_of_thought(rng: np.random.Generator, B: int, N: int = 40, d: int = 20, L: int = 6,
                     slope: float = LEAKY_SLOPE) -> tuple[np.ndarray, np.ndarray]:
    """Chain of thought with MLPs (Thm 3.3): s^0 = x, s^l = leaky(W_l s^{l-1}), W_l ~ N(0, 2/d).

    Returns (states (B, N + 1, L + 1, d), W (B, L, d, d)); sample N is the query.
    """
    _check_positive(B=B, N=N, d=d, L=L)
    W = rng.standard_normal((B, L, d, d)) * np.sqrt(2.0 / d)
    s = np.zeros((B, N + 1, L + 1, d))
    s[:, :, 0] = rng.standard_normal((B, N + 1, d))
    for l in range(L):
        s[:, :, l + 1] = leaky_relu(np.einsum("bij,bnj->bni", W[:, l], s[:, :, l]), slope)
    return s, W


# -- input samplers, separate from the tasks (training uses them for its curriculum) ------------
def gaussian_inputs(rng: np.random.Generator, B: int, n: int, d: int, d_active: int | None = None) -> np.ndarray:
    """x ~ N(0, I) of shape (B, n, d) with the coordinates >= d_active set to zero (the dimension
    curriculum of Garg et al. 2022 / Yang et al. 2024: a d_active-dim problem inside a d-dim prompt)."""
    _check_positive(B=B, n=n, d=d)
    d_active = d if d_active is None else d_active
    if not (isinstance(d_active, (int, np.integer)) and 1 <= d_active <= d):
        raise ValueError(f"d_active={d_active!r} is invalid: expected an integer in [1, d={d}]")
    x = rng.standard_normal((B, n, d))
    x[..., d_active:] = 0.0
    return x


def regression_from_inputs(rng: np.random.Generator, x: np.ndarray, phi: MLP | None = None, m: int = 1,
                           noise: float = 0.0) -> Regression:
    """Regression on given inputs x (B, N + 1, d), the last sample being the query:
    y = A x (phi None, as ``linear_regression``) or y = A Phi*(x) (as ``representation_regression``),
    A ~ N(0, I) (m x features), observed y with noise * N(0, I_m)."""
    B, n, _ = x.shape
    _check_positive(B=B, N=n - 1, m=m)
    if noise < 0:
        raise ValueError(f"noise={noise!r} is invalid: expected a float >= 0")
    feats = x if phi is None else phi(x)
    A = rng.standard_normal((B, m, feats.shape[-1]))
    y = np.einsum("bmd,bnd->bnm", A, feats)
    y_obs = y[:, :-1] + noise * rng.standard_normal((B, n - 1, m))
    return Regression(x[:, :-1], y_obs, x[:, -1], y[:, -1])


# -- the paper's fixed representations Phi* and the regression that AR(q) induces --------------
PHI_SEED = 0  # seed of the fixed Phi* of Section 5.1 (one Phi* shared by every problem)


def representation_mlp(d: int = 20, L: int = 3, seed: int = PHI_SEED, slope: float = LEAKY_SLOPE) -> MLP:
    """Phi* of the regression-with-representation experiment: L leaky-ReLU layers R^d -> R^d."""
    _check_positive(d=d, L=L)
    return random_mlp(np.random.default_rng(seed), [d] * (L + 1), slope)


def ar_mlp(q: int = 3, d: int = 20, L: int = 3, seed: int = PHI_SEED, slope: float = LEAKY_SLOPE) -> MLP:
    """Phi* of the AR(q) experiment: L leaky-ReLU layers R^{qd} -> R^d (paper: R^60 -> R^20)."""
    _check_positive(q=q, d=d, L=L)
    return random_mlp(np.random.default_rng(seed), [q * d] + [d] * L, slope)


def ar_regression(seq: np.ndarray, q: int) -> Regression:
    """The regression that AR(q) induces on seq (B, N + 1, d) = x_1 .. x_N, x_{N+1}.

    Sample t (1-based, t = q+1 .. N): window [x_{t-q}, ..., x_{t-1}] (oldest first, flattened to q*d)
    with label x_t; the query is the window [x_{N-q+1}, ..., x_N] and y_test = x_{N+1}. That is the
    conditional likelihood of x_{q+1..N} given the first q values: N - q samples. (The paper's sum
    over t = 1..N pads x_t = 0 for t < 1; the data do not come from that padded model.)
    """
    seq = np.asarray(seq, float)
    if seq.ndim != 3:
        raise ValueError(f"seq has shape {seq.shape}, expected (B, N + 1, d)")
    B, n1, d = seq.shape
    N = n1 - 1
    _check_positive(q=q)
    if N <= q:
        raise ValueError(f"N={N} is invalid: expected N > q={q} (at least one full window)")
    win = np.stack([seq[:, t - q:t].reshape(B, q * d) for t in range(q, N + 1)], axis=1)  # (B, N-q+1, qd)
    return Regression(win[:, :-1], seq[:, q:N], win[:, -1], seq[:, N])
