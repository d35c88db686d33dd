"""What the verifier needs to know about each compiled algorithm, in one table (``ALGORITHMS``).

An ``Algorithm`` draws seeded problems, checks them against the construction's assumptions, chooses
its step parameter, reports the largest score |a| of every linearised head group (which sets c),
builds the construction for given temperatures, and runs the numpy reference. The sweep and the CLI
are written once against this interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from algoformer.tasks import Regression, linear_regression
from constructions.gd import gd_construction
from constructions.linearise import Temperature, odd_values
from constructions.newton import alpha_limit, newton_construction
from constructions.prompt import Construction
from constructions.scores import gram_max, newton_score_bounds

from .bounds import gd_emulation_bound, newton_emulation_bound
from .references import Trajectory, gd_reference, newton_reference


@dataclass(frozen=True)
class Options:
    """Sizes and parameters common to every algorithm (the CLI fills them)."""
    N: int = 40
    d: int = 20
    m: int = 1
    problems: int = 64
    seed: int = 0
    x_bound: float = 100.0
    register_bound: float = 1e8    # |registers| the zeroing FFNs assume (checked on the numpy run)
    step: float | None = None      # eta (GD) or alpha (Newton); None = chosen from the data
    q: int = 3                     # AR order / copied tokens (``copy``, ``ar`` only; paper: 3)


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    step_name: str                                                   # "eta" / "alpha"
    draw: Callable[[np.random.Generator, Options], Regression]
    choose_step: Callable[[Regression], float]                        # a safe default from the data
    violations: Callable[[Regression, Options, float], np.ndarray]   # (B,) str, "" = within assumptions
    score_bounds: Callable[[Regression, float], dict[str, float]]    # group -> max |a|
    build: Callable[[Options, float, dict[str, Temperature], str], Construction]
    reference: Callable[[Regression, int, float], Trajectory]
    sweep: Callable | None = None      # replaces ``sweep.run_sweep`` (same signature), e.g. over beta
    verdict: Callable | None = None    # replaces ``report.verdict_lines`` (rows, n) -> lines
    options: tuple[str, ...] = ()      # extra CLI options this algorithm takes, e.g. ("q",)
    # (problem, ref, step, iters, temps, variant, n, u) -> (B,) bound on |prediction error| after T loops
    emulation_bound: Callable | None = None
    # (problem, iters, step, numpy dtype) -> Trajectory: the algorithm in another arithmetic
    reference_in: Callable | None = None
    # the linearisation variants its construction takes (the sinh ones need mirrored values)
    supports: Callable[[str], bool] = lambda variant: not odd_values(variant)


def _bound_violations(problem: Regression, opts: Options) -> np.ndarray:
    big = np.maximum(np.abs(problem.x).max(axis=(1, 2)), np.abs(problem.x_test).max(axis=1))
    return np.where(big > opts.x_bound, np.char.add("max|x| > x_bound=", str(opts.x_bound)), "")


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

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (GD, NEWTON)}

# Each of these registers its algorithms in ALGORITHMS when imported (copy, representation, ar; then
# decoder-gd, cot). They import this module first, so importing either of them first works too.
from . import algorithms_representation  # noqa: E402,F401
from . import algorithms_decoder  # noqa: E402,F401
