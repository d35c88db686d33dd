"""The T-loop bound of Theorem 4.1's emulation (``verify.bounds.newton_emulation_bound``): every
measured deviation, every loop, every problem, stays under it; and it is finite where the per-step
error is small enough for Newton-Schulz's amplification (about 2 per loop until convergence)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from verify.algorithms import NEWTON, Options
from verify.bounds import newton_emulation_bound
from verify.emulate import emulate
from verify.sweep import schedule_temps, unit_roundoff

ITERS = 12


def _as_held(p, dtype: str):
    """The problem as the model holds it: the bounds are on the construction's deviation from the
    algorithm run on the prompt it was given (in float32, the prompt rounded to float32: that rounding
    is the verifier's separate 'rounding the prompt alone' figure)."""
    np_dtype = {"float64": np.float64, "float32": np.float32}[dtype]
    return type(p)(*(np.asarray(getattr(p, k)).astype(np_dtype).astype(np.float64)
                     for k in ("x", "y", "x_test", "y_test")))


def _run(seed: int, N: int, d: int, theta: float, variant: str, dtype: str):
    opts = Options(N=N, d=d, problems=6, seed=seed)
    p = _as_held(NEWTON.draw(np.random.default_rng(seed), opts), dtype)
    alpha = NEWTON.choose_step(p)
    ref = NEWTON.reference(p, ITERS, alpha)
    n = 2 * N + 2
    temps = schedule_temps(theta, variant, n, NEWTON.score_bounds(p, alpha))
    emu = emulate(NEWTON.build(opts, alpha, temps, variant), p, ITERS, dtype)
    bound = newton_emulation_bound(p, alpha, ITERS, temps, variant, n, unit_roundoff(dtype))
    B = p.x.shape[0]
    it = np.linalg.norm((emu.iterates - ref.iterates).reshape(B, ITERS + 1, -1), axis=2)
    pred = np.abs(emu.predictions - ref.predictions)[..., 0]
    scale = np.linalg.norm(ref.iterates.reshape(B, ITERS + 1, -1), axis=2)
    return it, pred, bound, scale


@settings(deadline=None)
@given(seed=st.integers(0, 10_000), N=st.integers(6, 14), d=st.integers(2, 5),
       log_theta=st.sampled_from([-1.0, -2.0, -3.0]),
       variant=st.sampled_from(["paper", "odd+mirror", "richardson4+mirror", "richardson4", "sinh4", "sinh8"]),
       dtype=st.sampled_from(["float64", "float32"]))
def test_measured_deviation_is_under_the_T_loop_bound(seed, N, d, log_theta, variant, dtype):
    it, pred, bound, _ = _run(seed, N, d, 10.0 ** log_theta, variant, dtype)
    assert np.all(it <= bound["iterate"])
    assert np.all(pred <= bound["prediction"])


def test_bound_is_finite_and_small_for_a_high_order_variant_in_float64():
    it, pred, bound, scale = _run(0, 10, 3, 1e-2, "richardson4+mirror", "float64")
    rel = bound["iterate"][:, -1] / scale[:, -1]
    assert np.all(np.isfinite(rel)) and rel.max() < 1e-3
    assert np.all(it[:, -1] <= bound["iterate"][:, -1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_low_order_variant_in_float32_has_no_finite_bound(dtype):
    """odd+mirror's per-step error theta^2 times 2^(loops to converge) passes 1/||X||: the recursion
    says so (inf) instead of printing a meaningless number."""
    _, _, bound, _ = _run(2, 12, 4, 1e-1, "odd+mirror", dtype)
    assert np.isinf(bound["iterate"][:, -1]).any()


@pytest.mark.parametrize("name", ["gd", "newton"])
def test_references_run_in_the_requested_arithmetic(name):
    """The algorithm's own floor is only meaningful if every operation runs in that dtype (np.zeros
    defaulting to float64 silently upcast GD once)."""
    from verify.algorithms import ALGORITHMS
    algo = ALGORITHMS[name]
    p = algo.draw(np.random.default_rng(0), Options(N=8, d=3, problems=2))
    step = algo.choose_step(p)
    t32 = algo.reference_in(p, 4, step, np.float32)
    assert t32.iterates.dtype == np.float32 and t32.predictions.dtype == np.float32


def test_arithmetic_floor_sits_at_each_dtypes_unit_roundoff():
    from verify.sweep import arithmetic_floor
    algo = NEWTON
    opts = Options(N=12, d=3, problems=8)
    p = algo.draw(np.random.default_rng(3), opts)
    step = algo.choose_step(p)
    ref = algo.reference(p, 10, step)
    f32 = arithmetic_floor(algo, p, ref, step, 10, "float32")
    assert 2.0 ** -24 / 4 < f32["prediction_median"] < 1e4 * 2.0 ** -24
    assert f32["input_rounding_max"] > 0
    f64 = arithmetic_floor(algo, p, ref, step, 10, "float64")
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        assert 0 < f64["prediction_median"] < 1e4 * 2.0 ** -53
    else:
        assert f64 is None
    assert arithmetic_floor(algo, p, ref, step, 10, "bfloat16") is None


@settings(deadline=None)
@given(seed=st.integers(0, 10_000), N=st.integers(6, 14), d=st.integers(2, 5),
       log_theta=st.sampled_from([-1.0, -2.0, -3.0]),
       variant=st.sampled_from(["paper", "odd+mirror", "richardson4+mirror", "sinh4", "sinh8"]),
       dtype=st.sampled_from(["float64", "float32"]))
def test_gd_deviation_is_under_its_T_loop_bound(seed, N, d, log_theta, variant, dtype):
    from verify.algorithms import GD
    from verify.bounds import gd_emulation_bound
    opts = Options(N=N, d=d, problems=6, seed=seed)
    p = _as_held(GD.draw(np.random.default_rng(seed), opts), dtype)
    eta = GD.choose_step(p)
    ref = GD.reference(p, ITERS, eta)
    n = 2 * N + 2
    temps = schedule_temps(10.0 ** log_theta, variant, n, GD.score_bounds(p, eta))
    emu = emulate(GD.build(opts, eta, temps, variant), p, ITERS, dtype)
    bound = gd_emulation_bound(p, ref, eta, temps["loop"], variant, n, unit_roundoff(dtype))
    dev = np.abs(emu.iterates - ref.iterates).reshape(len(p.x), ITERS + 1, -1).max(axis=2)
    assert np.all(dev <= bound)
