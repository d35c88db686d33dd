"""The worked example of docs/worked-example.md (docs/examples/richardson.py): Richardson iteration, a construction
that is not in the paper, written against the public API, compiled, registered and verified against numpy."""
import math

import numpy as np
import pytest

from constructions.api import Temperature, validate
from constructions.export import export_construction, load_construction
from constructions.linearise import error_bound, order
from richardson import ALGORITHM, RichardsonConstruction, richardson_construction, richardson_reference
from verify import registry
from verify.cli import main
from verify.emulate import emulate
from verify.interface import Options
from verify.sweep import run_sweep

OPTS = Options(d=5, problems=4, seed=3)
ITERS = 12


@pytest.fixture(scope="module")
def problem():
    p = ALGORITHM.draw(np.random.default_rng(OPTS.seed), OPTS)
    assert (ALGORITHM.violations(p, OPTS, ALGORITHM.choose_step(p)) == "").all()
    return p


def test_the_reference_is_richardson_and_converges_to_the_solution(problem):
    """x_{k+1} = x_k + omega (b - A x_k) by hand for one step; then x_k -> A^{-1} b at the rate of
    rho(I - omega A) < 1 (the violations' condition)."""
    omega = ALGORITHM.choose_step(problem)
    ref = richardson_reference(problem, 200, omega)
    A, b, x0 = problem.x, problem.y[..., 0], problem.x_test
    np.testing.assert_allclose(ref.iterates[:, 1, :, 0], x0 + omega * (b - np.einsum("bij,bj->bi", A, x0)))
    rho = np.abs(np.linalg.eigvals(np.eye(OPTS.d) - omega * A)).max(axis=1)
    err = np.linalg.norm(ref.iterates[:, -1, :, 0] - problem.y_test, axis=1)
    assert (err <= rho ** 200 * np.linalg.norm(x0 - problem.y_test, axis=1) * (1 + 1e-9) + 1e-12).all()


def test_the_construction_is_valid_and_survives_export(problem, tmp_path):
    con = ALGORITHM.build(OPTS, 0.1, {"loop": Temperature(0.0, 1e-3)}, "odd+mirror")
    tokens = validate(con, problem.x, problem.y, problem.x_test)
    assert tokens.shape == (OPTS.problems, 2 * OPTS.d, con.layout.dim) == (4, ALGORITHM.n_tokens(OPTS), 12)
    export_construction(con, tmp_path / "rich")
    back = load_construction(tmp_path / "rich")
    assert isinstance(back, RichardsonConstruction) and back.token_roles() == con.token_roles()
    np.testing.assert_array_equal(back.encode(problem.x, problem.y, problem.x_test), tokens)


@pytest.mark.parametrize("theta", [1e-1, 1e-3, 1e-5, 1e-7])
def test_emulation_error_within_the_linearisation_bound_over_the_loops(problem, theta):
    """Each loop adds at most one head-group error eps_k (``linearise.error_bound``, a_max = max|A|,
    s_v = omega sum_i |x_i| as the heads saw it) plus the rounding of the residual adds; the error then
    propagates through I - omega A (2-norm <= 1 for SPD A and omega <= 1/lambda_max), so
    ||e_T|| <= sum_k sqrt(d) (eps_k + r_k)."""
    omega = ALGORITHM.choose_step(problem)
    a_max = float(np.abs(problem.x).max())
    con = richardson_construction(OPTS.d, omega, Temperature(0.0, theta / a_max))
    emu = emulate(con, problem, ITERS, "float64")
    ref = richardson_reference(problem, ITERS, omega)
    u, n = 2.0 ** -53, 2 * OPTS.d
    x = np.abs(emu.iterates[..., 0])                                                    # (B, T+1, d)
    temp = Temperature(0.0, theta / a_max)
    eps = np.array([[error_bound("odd+mirror", temp, n, a_max, omega * x[b, k].sum(), u)["total"]
                     for k in range(ITERS)] for b in range(len(x))])
    r = 4 * u * (x[:, :-1] + omega * np.einsum("bij,bkj->bki", np.abs(problem.x), x[:, :-1])
                 + omega * np.abs(problem.y[..., 0])[:, None]).max(axis=2)
    bound = math.sqrt(OPTS.d) * (eps + r).sum(axis=1)
    err = np.linalg.norm(emu.iterates[:, -1, :, 0] - ref.iterates[:, -1, :, 0], axis=1)
    assert (err <= bound).all(), (err, bound)


def test_sweep_falls_as_theta_to_the_order_then_meets_a_floor():
    """odd+mirror has order P = 2: the error falls as theta^2 over the truncation-dominated decades,
    then rounding (~u/theta) takes over: the smallest theta is worse than the best one."""
    config, rows = run_sweep(ALGORITHM, OPTS, ITERS, ["odd+mirror"], ["float64"], "cpu",
                             thetas=[1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-10])
    assert config["valid_problems"] == OPTS.problems and "N" not in config and config["d"] == OPTS.d
    sweep = {r.theta: r.error_prediction for r in rows if not r.auto and r.status == "ok"}
    slope = np.polyfit(np.log10([1e-1, 1e-2, 1e-3]), np.log10([sweep[t] for t in (1e-1, 1e-2, 1e-3)]), 1)[0]
    assert abs(slope - order("odd+mirror")) < 0.2
    best = min(sweep, key=sweep.get)
    assert 1e-10 < best < 1e-2 and sweep[1e-10] > 10 * sweep[best]


def test_registered_in_process_it_runs_from_the_cli(tmp_path, capsys):
    registry.register(ALGORITHM)
    try:
        assert "richardson" in registry.names() and registry.origin("richardson") == "register()"
        code = main(["richardson", "--iters", "4", "--d", "3", "--problems", "2", "--dtype", "float64",
                     "--quiet", "--json", str(tmp_path / "r.json")])
    finally:
        registry.unregister("richardson")
    out = capsys.readouterr().out
    assert code == 0 and "configuration: algorithm=richardson, d=3" in out and "float64 odd+mirror" in out
    assert "richardson" not in registry.names()
