"""The builtin regression algorithms ``gd`` (Lemma A.2) and ``newton`` (Lemma A.4, Theorem 4.1).

Each is an ``interface.Algorithm``: it draws seeded problems, checks them against the construction's
assumptions, chooses its step parameter, reports the largest score |a| of every linearised head group
(which sets c), builds the construction for given temperatures, and runs the numpy reference. The
registry (``verify.registry``) finds them by name, as it finds every other entry; this module registers
nothing and imports neither the registry nor the other algorithm modules.

``ALGORITHMS`` (every registered sweep algorithm, plug-ins included) is kept as a read-only alias of
``registry.algorithms()`` for notebooks and scripts written before the registry.
"""
from __future__ import annotations

import numpy as np

from algoformer.tasks import Regression, linear_regression
from constructions.gd import gd_construction
from constructions.newton import alpha_limit, newton_construction
from constructions.scores import gram_max, newton_score_bounds

from .bounds import gd_emulation_bound, newton_emulation_bound
from .interface import Algorithm, Options, bound_violations
from .references import gd_reference, newton_reference

__all__ = ["ALGORITHMS", "Algorithm", "GD", "NEWTON", "Options"]

_bound_violations = bound_violations     # its former name (imported by older code)


# -- gradient descent (Lemma A.2) -------------------------------------------------------------
def _gd_lmax(p: Regression) -> np.ndarray:
    S = np.einsum("bni,bnj->bij", p.x, p.x) / p.x.shape[1]
    return np.linalg.eigvalsh(S)[:, -1]


def _gd_violations(p: Regression, opts: Options, eta: float) -> np.ndarray:
    v = _bound_violations(p, opts)
    bad = eta >= 2.0 / _gd_lmax(p)
    return np.where((v == "") & bad, "eta >= 2/lambda_max(S/N): GD diverges", v)


GD = Algorithm(
    name="gd", summary="gradient descent for multivariate regression (Lemma A.2, Thm 3.1 loop)",
    step_name="eta",
    draw=lambda rng, o: linear_regression(rng, o.problems, o.N, o.d, o.m),
    choose_step=lambda p: float(1.0 / _gd_lmax(p).max()),
    violations=_gd_violations,
    score_bounds=lambda p, eta: {"loop": gram_max(p) / p.x.shape[1]},
    build=lambda o, eta, temps, variant: gd_construction(o.d, o.N, eta, temps["loop"], o.m, variant, o.x_bound,
                                                          register_bound=o.register_bound),
    reference=gd_reference,
    emulation_bound=lambda p, ref, eta, iters, temps, variant, n, u:
        gd_emulation_bound(p, ref, eta, temps["loop"], variant, n, u)[:, -1],
    reference_in=gd_reference,
    supports=lambda variant: True,
)


# -- Newton's method (Lemma A.4, Theorem 4.1) -------------------------------------------------
def _newton_violations(p: Regression, opts: Options, alpha: float) -> np.ndarray:
    v = _bound_violations(p, opts)
    bad = alpha >= alpha_limit(p.x)
    return np.where((v == "") & bad, "alpha >= 2/||S S^T||: Newton-Schulz does not converge", v)


NEWTON = Algorithm(
    name="newton", summary="Newton's iteration for linear regression (Lemma A.4, Thm 4.1)",
    step_name="alpha",
    draw=lambda rng, o: linear_regression(rng, o.problems, o.N, o.d, 1),
    choose_step=lambda p: float(0.5 * alpha_limit(p.x).min()),
    violations=_newton_violations,
    score_bounds=newton_score_bounds,
    build=lambda o, alpha, temps, variant: newton_construction(o.d, o.N, alpha, temps, variant, o.x_bound,
                                                                  register_bound=o.register_bound),
    reference=newton_reference,
    emulation_bound=lambda p, ref, alpha, iters, temps, variant, n, u:
        newton_emulation_bound(p, alpha, iters, temps, variant, n, u)["prediction"][:, -1],
    reference_in=newton_reference,
    supports=lambda variant: True,
)

def __getattr__(name: str):
    """``ALGORITHMS``: the registry's sweep algorithms, looked up when asked for (PEP 562), so that
    importing this module does not load the other algorithm modules."""
    if name == "ALGORITHMS":
        from .registry import algorithms
        return algorithms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
