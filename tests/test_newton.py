"""Lemma A.4 and Theorem 4.1, including the defects of the printed construction."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from algoformer.tasks import linear_regression
from constructions import reference
from constructions.bridge import build_model
from constructions.gd import move
from constructions.linearise import Temperature, bilinear_heads, error_bound
from constructions.newton import NOT_X, alpha_limit, newton_construction
from constructions.weights import LayerWeights
from verify.algorithms import NEWTON, Options
from verify.emulate import emulate, relative_error
from verify.references import newton_reference
from verify.sweep import auto_temps, run_sweep


def setup(seed, N=10, d=3, theta=1e-3, C=30.0, variant="odd", B=4):
    opts = Options(N=N, d=d, problems=B, seed=seed)
    p = NEWTON.draw(np.random.default_rng(seed), opts)
    alpha = NEWTON.choose_step(p)
    scores = NEWTON.score_bounds(p, alpha)
    temps = {g: Temperature(C, theta / a) for g, a in scores.items()}
    return p, newton_construction(d, N, alpha, temps, variant), alpha, temps, scores


@given(seed=st.integers(0, 10**6), log_theta=st.floats(-4, -1),
       variant=st.sampled_from(["paper", "odd", "richardson4", "odd+mirror", "richardson6+mirror"]), k=st.integers(0, 6))
def test_one_step_matches_numpy_within_the_bound(seed, log_theta, variant, k):
    """Start the loop from the exact M_k x_i (numpy), apply one layer, compare with M_{k+1} x_i."""
    p, con, alpha, temps, scores = setup(seed, theta=10 ** log_theta, variant=variant,
                                         C=0.0 if variant.endswith("+mirror") else 30.0)
    lay, N = con.layout, 10
    h = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    ref = newton_reference(p, k + 1, alpha).iterates
    h[:, 0:2 * N:2, lay["Mx"]] = ref[:, k]
    out = build_model(con.weights).run_loop(torch.from_numpy(h), 1).numpy()
    got = con.iterate.read(lay, out)
    Mx = ref[:, k]
    a_max = np.abs(np.einsum("bni,bmi->bnm", Mx, p.x)).max()
    s_v = 0.5 * np.abs(Mx).sum(axis=1).max()
    bound = 2 * error_bound(variant, temps["loop"], 2 * N + 2, a_max, s_v, 2.0 ** -53)["total"]  # FFN doubles
    assert np.abs(got - ref[:, k + 1]).max() <= bound


def test_sink_register_stays_zero():
    """Found by running 20 loops: without the zeroing FFN, rounding residue in Mx on the sink was
    multiplied by e^C / c every loop (about 30x per loop in float64 at C = 31.5)."""
    p, con, alpha, temps, _ = setup(0, C=31.5, theta=3e-5, variant="odd")
    lay, N = con.layout, 10
    _, cache = build_model(con.weights).run_with_cache(torch.from_numpy(con.encode(p.x, p.y, p.x_test)), 20)
    for t in range(1, 21):
        state = cache[f"loop.{t}.hook_state"]
        assert torch.count_nonzero(state[:, 1::2, lay["Mx"]]) == 0            # y-tokens, sink
        assert torch.count_nonzero(state[:, 2 * N, lay["Mx"]]) == 0           # test token


def test_printed_ffn_weight_one_over_c_cannot_give_the_newton_step():
    """Defect 1: the printed layer writes Mx + c M S M x (value e^C Mx, constant-cancel heads) and then
    applies "an FFN with weight 1/c". Any per-row linear map gives mu * (Mx + c MSMx): the best mu
    still misses 2 Mx - M S M x by a wide margin."""
    p, con, alpha, temps, _ = setup(1, variant="odd")
    lay, N, d = con.layout, 10, 3
    Q = np.zeros((d, lay.dim)); Q[:, lay["Mx"]] = np.eye(d)
    K = np.zeros((d, lay.dim)); K[:, lay["xk"]] = np.eye(d)
    t = temps["loop"]
    printed = tuple(type(hd)(hd.query, hd.key, hd.value * t.c * t.c, hd.name)   # e^C Mx, times c
                    for hd in bilinear_heads(lay, Q, K, move(lay, "Mx", "Mx", 1.0), t, "paper"))
    h = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    row = reference.apply_layer(LayerWeights(printed), h)[:, 0:2 * N:2, lay["Mx"]]
    target = newton_reference(p, 1, alpha).iterates[:, 1]
    mu = np.sum(row * target) / np.sum(row * row)
    assert np.linalg.norm(mu * row - target) > 0.1 * np.linalg.norm(target)
    ours = con.iterate.read(lay, reference.apply_stack(con.weights.loop, h))
    assert np.linalg.norm(ours - target) < 1e-5 * np.linalg.norm(target)


def test_step_size_endpoint_does_not_converge_and_is_reported():
    """Defect 4: Eq. 5 allows alpha = 2/||S S^T||; there u = alpha lambda_max^2 = 2 maps to 0 and
    ||I - M_k S|| stays 1 for ever (exactly, in rational arithmetic; in floating point only rounding
    eventually rescues it, after about 50 doublings). The verifier must flag it."""
    from fractions import Fraction
    u = Fraction(2)                       # eigenvalue of M_0 S along lambda_max at the endpoint
    for _ in range(100):
        u = 2 * u - u * u
    assert u == 0                         # ||I - M_k S|| = |1 - u| = 1 for every k
    p = linear_regression(np.random.default_rng(0), 3, 10, 3)
    alpha = float(alpha_limit(p.x).min())
    i = int(np.argmin(alpha_limit(p.x)))
    S = np.einsum("bni,bnj->bij", p.x, p.x)[i]
    M = alpha * S
    for _ in range(20):                   # the verifier's default T
        M = 2 * M - M @ S @ M
    assert np.linalg.norm(np.eye(3) - M @ S, 2) == pytest.approx(1.0, abs=1e-6)
    config, rows = run_sweep(NEWTON, Options(N=10, d=3, problems=3, seed=0, step=alpha), 3, ["odd"],
                             ["float64"], "cpu", thetas=[1e-3])
    assert i in config["excluded"] and "alpha" in config["excluded"][i]


def test_post_copies_y_to_the_x_token_only_and_leaves_y_alone():
    """Defect 7: the printed post-transformer leaves 2 y_i on the y-tokens."""
    p, con, *_ = setup(2)
    lay, N = con.layout, 10
    h = reference.apply_layer(con.weights.post[0], con.encode(p.x, p.y, p.x_test))
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["ypair"]], p.y)
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["ypair"]], 0.0)
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["y"]], p.y)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 0.5)])
def test_full_pipeline_matches_numpy_after_20_loops(dtype, tol):
    opts = Options(N=12, d=4, problems=8, seed=7)
    p = NEWTON.draw(np.random.default_rng(7), opts)
    alpha = NEWTON.choose_step(p)
    con = NEWTON.build(opts, alpha, auto_temps("odd", 26, NEWTON.score_bounds(p, alpha), dtype), "odd")
    emu, ref = emulate(con, p, 20, dtype), newton_reference(p, 20, alpha)
    assert relative_error(emu.predictions[:, -1], ref.predictions[:, -1]).max() < tol
    assert relative_error(emu.iterates[:, -1], ref.iterates[:, -1]).max() < tol


def test_float_precision_has_a_floor():
    """Defect 6: "arbitrarily close" fails in floating point: in float32 a smaller theta (a larger
    temperature) is worse past the floor, not better."""
    opts = Options(N=10, d=3, problems=4, seed=3)
    _, rows = run_sweep(NEWTON, opts, 5, ["odd"], ["float32"], "cpu", thetas=[1e-1, 1e-2, 1e-5])
    e = {r.theta: r.error_iterate for r in rows if not r.auto}
    assert e[1e-5] > 10 * min(e[1e-1], e[1e-2])


def test_sinh_loop_is_mirrored_exactly_and_has_order_four_with_two_heads():
    """sinh4: the loop's first layer writes -M x_i onto every y-token exactly (bit for bit, float32
    and float64), its step layer has two heads, and the error falls as theta^4 (the pre and post
    groups use richardson4+mirror: ``newton.group_variants``)."""
    from constructions.newton import group_variants
    assert group_variants("sinh4") == {"pre": "richardson4+mirror", "loop": "sinh4", "post": "richardson4+mirror"}
    opts = Options(N=10, d=3, problems=4)
    p = NEWTON.draw(np.random.default_rng(5), opts)
    alpha = NEWTON.choose_step(p)
    scores = NEWTON.score_bounds(p, alpha)
    errs = []
    for theta in (1e-1, 1e-2):
        temps = {g: Temperature(0.0, theta / a) for g, a in scores.items()}
        con = NEWTON.build(opts, alpha, temps, "sinh4")
        mirror, step = con.weights.loop
        assert len(step.heads) == 2
        emu = emulate(con, p, 8, torch.float64)
        errs.append(relative_error(emu.iterates[:, -1], newton_reference(p, 8, alpha).iterates[:, -1]).max())
    assert 3.6 < np.log10(errs[0] / errs[1]) < 4.4
    lay, N = con.layout, 10
    for dtype in (torch.float64, torch.float32):
        model = build_model(con.weights, dtype=dtype)
        h = model.run_pre(model.embed(torch.from_numpy(con.encode(p.x, p.y, p.x_test)).to(dtype)))
        for t in range(1, 4):
            h = model.loop[0](h)                                    # the mirror layer
            mx = h[:, :, lay["Mx"]]
            assert torch.equal(mx[:, 1:2 * N:2], -mx[:, 0:2 * N:2])
            h = model.loop[1](h)                                    # the step (zeroes the y-tokens again)
