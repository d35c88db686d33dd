"""The error of looped GD against T and n/d, beside Chen et al. 2024's claim (used by ``linear_gd``).

The claim (arXiv 2410.11268, as restated in SEED_SYSTEMS.md): after T loops the error is about
|alpha| exp(-T / (2 kappa)), kappa the condition number of the data, with n = O(d) samples. What GD
does in exact arithmetic, derived here (S = X^T X / N with eigenpairs (lambda_i, q_i), mu = lambda_min,
L = lambda_max, kappa = L / mu, w_LS the least-squares solution, c_i = q_i . w_LS, w_0 = 0):

    w_T - w_LS = (I - eta S)^T (w_0 - w_LS),   e_T := ||w_T - w_LS|| / ||w_LS|| = ||diag(1 - eta lambda)^T c|| / ||c||
    e_T <= rho^T with rho = max_i |1 - eta lambda_i| = 1 - eta mu when eta <= 1 / L.

So |alpha| = ||w_LS|| (e is relative to it), and for eta in [1/(2L), 1/L], rho <= 1 - 1/(2 kappa) <= exp(-1/(2 kappa)):
the claim holds as an upper bound. The rate between loops T1 < T2, r = log(e_T1 / e_T2) / (T2 - T1), is
derived to lie in  [-log rho, -log rho + log(||c|| / |c_min|) / (T2 - T1)]  (c_min: the component along
lambda_min; e_T2 >= |c_min| rho^T2 / ||c||, e_T1 <= rho^T1): at eta = 1/L it tends to -log(1 - 1/kappa) >= 1/kappa,
twice the claim's 1/(2 kappa). With n = rho_nd d Gaussian samples kappa concentrates near the
Marchenko-Pastur value ((1 + 1/sqrt(rho_nd)) / (1 - 1/sqrt(rho_nd)))^2, whatever d: hence n = O(d).

The closed form above is evaluated per problem (``exact_errors``): an error curve with no rounding floor.
The measured curves (numpy GD, the transformer in float64 / float32) follow it until rounding stops them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    lam: np.ndarray       # (B, d) eigenvalues of X^T X / N, ascending
    coef: np.ndarray      # (B, d) c_i = q_i . w_LS
    w_ls: np.ndarray      # (B, d)

    @property
    def kappa(self) -> np.ndarray:
        return self.lam[:, -1] / self.lam[:, 0]


def spectrum(x: np.ndarray, y: np.ndarray) -> Spectrum:
    """x (B, N, d), y (B, N, 1) with N >= d (full column rank, else kappa is infinite)."""
    B, N, d = x.shape
    if N < d:
        raise ValueError(f"N={N} is invalid for the law: expected N >= d={d} (X^T X is singular below)")
    lam, Q = np.linalg.eigh(np.einsum("bni,bnj->bij", x, x) / N)
    w = np.stack([np.linalg.lstsq(x[b], y[b, :, 0], rcond=None)[0] for b in range(B)])
    return Spectrum(lam, np.einsum("bdi,bd->bi", Q, w), w)


def marchenko_pastur_kappa(ratio: float) -> float:
    s = 1.0 / math.sqrt(ratio)
    return ((1 + s) / (1 - s)) ** 2


def exact_errors(sp: Spectrum, eta: float, iters: int) -> np.ndarray:
    """(B, T+1) e_T of GD in exact arithmetic (closed form)."""
    T = np.arange(iters + 1)[None, :, None]
    shrink = np.abs(1 - eta * sp.lam)[:, None, :] ** T                            # (B, T+1, d)
    return np.linalg.norm(shrink * sp.coef[:, None, :], axis=2) / np.linalg.norm(sp.coef, axis=1)[:, None]


def contraction(sp: Spectrum, eta: float) -> np.ndarray:
    """(B,) rho = max_i |1 - eta lambda_i|."""
    return np.abs(1 - eta * sp.lam).max(axis=1)


def rate_interval(sp: Spectrum, eta: float, t1: int, t2: int) -> tuple[np.ndarray, np.ndarray]:
    """(B,) derived bounds on the measured rate between loops t1 < t2 (module docstring); eta <= 1/L."""
    if np.any(eta * sp.lam[:, -1] > 1 + 1e-12):
        raise ValueError(f"eta={eta!r} is invalid for rate_interval: expected eta <= 1/lambda_max")
    lo = -np.log(contraction(sp, eta))
    c_min = np.abs(sp.coef[:, 0]) / np.linalg.norm(sp.coef, axis=1)
    return lo, lo + np.log(1.0 / c_min) / (t2 - t1)


def gd_errors(x: np.ndarray, y: np.ndarray, sp: Spectrum, eta: float, iters: int, dtype=np.float64) -> np.ndarray:
    """(B, T+1) e_T of numpy GD on w (m = 1) in ``dtype``."""
    x_, y_ = x.astype(dtype), y[..., 0].astype(dtype)
    N = x.shape[1]
    w = np.zeros(x.shape[::2], dtype)
    out = []
    for _ in range(iters + 1):
        out.append(np.linalg.norm(w.astype(np.float64) - sp.w_ls, axis=1))
        w = w - dtype(eta) * np.einsum("bn,bnd->bd", np.einsum("bnd,bd->bn", x_, w) - y_, x_) / dtype(N)
    return np.stack(out, 1) / np.linalg.norm(sp.w_ls, axis=1)[:, None]


def errors_from_tokens(x: np.ndarray, y: np.ndarray, sp: Spectrum, residuals: np.ndarray) -> np.ndarray:
    """(B, T+1) e_T of the transformer: residuals (B, T+1, N) = X w_T - y on the sample tokens, so
    w_T = X^+ (residual + y), read out in float64 with x, y *as the model held them* (rounded to its
    dtype: with the float64 data the read-out would cancel the input rounding, and with noiseless data
    the residuals tend to 0 with relative rounding only). Exact in exact arithmetic (full column rank)."""
    pinv = np.linalg.pinv(x)                                                       # (B, d, N)
    w = np.einsum("bdn,btn->btd", pinv, residuals + y[:, None, :, 0])
    return np.linalg.norm(w - sp.w_ls[:, None], axis=2) / np.linalg.norm(sp.w_ls, axis=1)[:, None]


def fitted_rate(err: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """(B,) least-squares slope of -log e_T over T >= 1 where e_T > 100 floor (NaN with < 3 points)."""
    out = np.full(err.shape[0], np.nan)
    T = np.arange(err.shape[1])
    for b in range(err.shape[0]):
        keep = (T >= 1) & (err[b] > 100 * floor[b]) & (err[b] > 0)
        if keep.sum() >= 3:
            out[b] = -np.polyfit(T[keep], np.log(err[b, keep]), 1)[0]
    return out


def floor_of(err: np.ndarray) -> np.ndarray:
    """(B,) the median error over the last fifth of the loops (the level rounding holds it at)."""
    tail = err[:, -max(1, err.shape[1] // 5):]
    return np.median(tail, axis=1)


def left_exact_at(err: np.ndarray, exact: np.ndarray, tol: float = 0.1) -> np.ndarray:
    """(B,) first loop T where |e_T - exact e_T| > tol exact e_T (-1: never within the run)."""
    off = np.abs(err - exact) > tol * exact
    return np.where(off.any(axis=1), off.argmax(axis=1), -1)


def write_law_plot(path: str, groups: list[dict], iters: int, title: str) -> None:
    """Left: median e_T against T per n/d (transformer per dtype, numpy GD), the claim exp(-T/(2 kappa))
    and the exact-arithmetic GD curve; right: e after ``iters`` and after the last loop against n/d,
    the claim and exact GD beside it (the medians of e_T per loop: ``groups[i]["curves"]``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"float64": "-", "float32": "--", "gd-numpy-float64": ":", "gd-numpy-float32": (0, (1, 4))}
    colors = dict(zip(styles, ("C0", "C3", "C7", "C8")))
    for g, color in zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        T = np.arange(len(g["exact"]))
        for name, curve in g["curves"].items():
            ax.semilogy(T, np.maximum(curve, 1e-18), linestyle=styles.get(name, "-"), color=color, lw=1.2,
                        label=f"n/d={g['ratio']:g} {name}" if name in ("float64", "float32") or g is groups[0] else None)
        ax.semilogy(T, np.exp(-T / (2 * g["kappa"])), "-.", color=color, lw=0.8, alpha=0.6)
        ax.semilogy(T, np.maximum(g["exact"], 1e-18), color=color, lw=3, alpha=0.2)
    ax.set_ylim(1e-17, 3)
    ax.set_xlabel("loops T")
    ax.set_ylabel("||w_T - w_LS|| / ||w_LS||  (median over problems)")
    ax.set_title("lines: measured; dash-dot: claim exp(-T/(2 kappa)); wide: exact GD", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, alpha=0.3)
    ratios = [g["ratio"] for g in groups]
    last = len(groups[0]["exact"]) - 1
    for T, marker in ((iters, "o"), (last, "s")):
        for name, curve in groups[0]["curves"].items():
            bx.semilogy(ratios, [max(g["curves"][name][T], 1e-18) for g in groups], marker=marker, mfc="none" if T == last else None,
                        linestyle=styles.get(name, "-"), color=colors.get(name), label=f"{name}, T={T}")
        bx.semilogy(ratios, [math.exp(-T / (2 * g["kappa"])) for g in groups], "k-.", lw=0.8,
                    label=f"claim exp(-T/(2 kappa)), T={T}")
        bx.semilogy(ratios, [max(g["exact"][T], 1e-18) for g in groups], "k-", alpha=0.25, lw=3, label=f"exact GD, T={T}")
    bx.set_ylim(1e-17, 3)
    bx.set_xscale("log")
    bx.set_xlabel("n / d")
    bx.set_ylabel(f"error after T={iters} and T={last} loops (median)")
    bx.legend(fontsize=6, ncol=2)
    bx.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
