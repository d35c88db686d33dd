"""Theorem 3.1: Phi* exactly in the feed-forward networks, GD on the features, the answer slot."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from algoformer import tasks
from constructions import reference
from constructions.bridge import build_model
from constructions.gadgets import leaky_relu_layer
from constructions.linearise import DEFAULT_VARIANT, Temperature, error_bound
from constructions.representation import representation_construction
from constructions.weights import LayerWeights
from verify.algorithms import ALGORITHMS, Options
from verify.algorithms_representation import REPRESENTATION, features, gd_emulation_bound
from verify.emulate import emulate
from verify.references import gd_reference
from verify.sweep import auto_temps

U64, U32 = 2.0 ** -53, 2.0 ** -24


def problem(seed, N=8, d=3, m=1, B=4):
    phi = tasks.representation_mlp(d)
    p = tasks.representation_regression(np.random.default_rng(seed), B, phi, N, d, m)
    f = tasks.Regression(phi(p.x), p.y, phi(p.x_test), p.y_test)
    eta = float(0.5 / np.linalg.eigvalsh(np.einsum("bni,bnj->bij", f.x, f.x) / N)[:, -1].max())
    return phi, p, f, eta


def integer_mlp(draw, widths, slope):
    Ws = tuple(np.array(draw(st.lists(st.integers(-3, 3), min_size=o * i, max_size=o * i)), float).reshape(o, i)
               for i, o in zip(widths[:-1], widths[1:]))
    bs = tuple(np.array(draw(st.lists(st.integers(-4, 4), min_size=o, max_size=o)), float) for o in widths[1:])
    return tasks.MLP(Ws, bs, slope)


def features_in(phi, x, dtype):
    """numpy Phi*(x) computed in the dtype (weights, slope and inputs cast first)."""
    npt = np.float32 if dtype == torch.float32 else np.float64
    cast = tasks.MLP(tuple(W.astype(npt) for W in phi.weights), tuple(b.astype(npt) for b in phi.biases),
                     npt(phi.slope))
    return cast(x.astype(npt)).astype(np.float64)


def pre_features(con, x, y, x_test, dtype):
    model = build_model(con.weights, dtype=dtype)
    h = torch.from_numpy(con.encode(x, y, x_test)).to(dtype)
    with torch.no_grad():
        h = model.run_pre(h)
    return h.double().numpy()[:, :, con.layout["x"]]


@settings(max_examples=15)
@given(data=st.data(), L=st.integers(1, 3), slope=st.sampled_from([0.0, 0.5, 0.25, 0.125]),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_leaky_relu_mlp_is_exact_in_the_ffns(data, L, slope, dtype):
    """relu(z) - a relu(-z) is leaky(z) bit for bit, and each layer writes a fresh register, so where
    the arithmetic itself is exact (integer weights and inputs, dyadic slope: every sum fits the
    mantissa) the features are Phi*(x) exactly, on the x-tokens and the test token; 0 on the y-tokens
    and the sink."""
    d = data.draw(st.integers(1, 3))
    widths = [d] + [data.draw(st.integers(1, 3)) for _ in range(L)]
    phi = integer_mlp(data.draw, widths, slope)
    N, B = 3, 2
    ints = st.lists(st.integers(-3, 3), min_size=B * (N + 1) * d, max_size=B * (N + 1) * d)
    v = np.array(data.draw(ints), float).reshape(B, N + 1, d)
    x, x_test, y = v[:, :N], v[:, N], np.ones((B, N, 1))
    con = representation_construction(phi, N, 0.1, Temperature(20.0, 1e-3))
    got = pre_features(con, x, y, x_test, dtype)
    np.testing.assert_array_equal(got[:, 0:2 * N:2], features_in(phi, x, dtype))
    np.testing.assert_array_equal(got[:, 2 * N], features_in(phi, x_test, dtype))
    np.testing.assert_array_equal(got[:, 1:2 * N:2], 0.0)
    np.testing.assert_array_equal(got[:, 2 * N + 1], 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_paper_slope_is_exact_on_one_layer(dtype):
    """The paper's a = 0.01 is not dyadic: a z rounds, but once, the same way as numpy's leaky(z)."""
    rng = np.random.default_rng(0)
    phi = tasks.MLP((rng.integers(-3, 4, (4, 3)).astype(float),), (rng.integers(-3, 4, 4).astype(float),))
    x = rng.integers(-5, 6, (2, 6, 3)).astype(float)
    con = representation_construction(phi, 5, 0.1, Temperature(20.0, 1e-3))
    got = pre_features(con, x[:, :5], np.ones((2, 5, 1)), x[:, 5], dtype)
    np.testing.assert_array_equal(got[:, 0:10:2], features_in(phi, x[:, :5], dtype))
    np.testing.assert_array_equal(got[:, 10], features_in(phi, x[:, 5], dtype))


def test_in_place_leaky_layer_is_not_exact():
    """Why fresh registers: an in-place layer (``clear_src``) forms x + (leaky(Wx + b) - x), which
    rounds. x = 1, W = 0.1: 1 + fl(0.1 - 1) is not fl(0.1); a fresh register holds fl(0.1) exactly."""
    from constructions.layout import Layout
    W, b = np.array([[0.1]]), np.array([0.0])
    want = tasks.leaky_relu(np.array([0.1]))[0]
    lay = Layout(); lay.add("x", 1)
    inplace = reference.apply_layer(LayerWeights(ffn=leaky_relu_layer(lay, "x", "x", W, b, 0.01, clear_src=True)),
                                    np.ones((1, 1, 1)))
    assert inplace[0, 0, 0] != want
    lay2 = Layout(); lay2.add("x", 1); lay2.add("h", 1)
    h2 = np.zeros((1, 1, 2)); h2[0, 0, 0] = 1.0
    fresh = reference.apply_layer(LayerWeights(ffn=leaky_relu_layer(lay2, "x", "h", W, b, 0.01)), h2)
    assert fresh[0, 0, 1] == want


def test_features_within_the_dot_product_rounding_bound():
    """Gaussian Phi* at the paper's size: torch features vs numpy Phi*(x) within the standard bound
    |fl(Wh + b) - (Wh + b)| <= gamma_k (|W||h| + |b|) for both computations, propagated layer by
    layer through |W| (leaky ReLU is 1-Lipschitz)."""
    phi, p, f, eta = problem(0, N=10, d=20, B=2)
    con = representation_construction(phi, 10, eta, Temperature(20.0, 1e-3))
    model = build_model(con.weights)
    h = torch.from_numpy(con.encode(p.x, p.y, p.x_test))
    with torch.no_grad():
        for layer in model.pre:
            h = layer(h)
    got = h.numpy()[:, 0:20:2, con.layout["x"]]
    e, a = np.zeros_like(p.x), p.x
    for W, b in zip(phi.weights, phi.biases):
        k = W.shape[1] + 1
        gamma = k * U64 / (1 - k * U64)
        e = np.abs(e) @ np.abs(W).T + 2 * gamma * (np.abs(a) @ np.abs(W).T + np.abs(b)) + U64 * np.abs(a @ W.T + b)
        a = tasks.leaky_relu(a @ W.T + b, phi.slope)
    assert (np.abs(got - f.x) <= e).all()


def test_pre_forms_the_gd_registers_exactly():
    phi, p, f, eta = problem(1, m=2)
    N = 8
    con = representation_construction(phi, N, eta, Temperature(20.0, 1e-3), m=2)
    lay = con.layout
    h = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    feats = h[:, 0:2 * N:2, lay["x"]]
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["r"]], -p.y)                 # A_0 Phi*(x_i) - y_i
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["r"]], 0.0)
    np.testing.assert_array_equal(h[:, 2 * N:, lay["r"]], 0.0)
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["xN"]], feats * (1.0 / N))
    np.testing.assert_array_equal(h[:, 2 * N:, lay["xN"]], 0.0)
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["xN"]], -feats * (1.0 / N))   # mirrored keys (``gd``)
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["x"]], 0.0)                    # y-tokens: no features


@settings(max_examples=10)
@given(seed=st.integers(0, 10**6), log_theta=st.floats(-4, -1), dtype=st.sampled_from([torch.float64, torch.float32]),
       variant=st.sampled_from(sorted({"odd", "paper", DEFAULT_VARIANT})))
def test_one_loop_matches_numpy_gd_on_the_features_within_the_bound(seed, log_theta, dtype, variant):
    phi, p, f, eta = problem(seed)
    N, n = 8, 18
    pts = np.concatenate([f.x, f.x_test[:, None]], axis=1)
    a_max = np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / N
    temp = Temperature(30.0 if dtype == torch.float64 else 18.0, 10 ** log_theta / a_max)
    con = representation_construction(phi, N, eta, temp, variant=variant)
    lay = con.layout
    h0 = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    h1 = build_model(con.weights, dtype=dtype).run_loop(torch.from_numpy(h0).to(dtype), 1).double().numpy()
    ref = gd_reference(f, 1, eta).iterates[:, 1]
    s_v = eta * np.abs(h0[:, :, lay["r"]]).sum(axis=1).max()
    u = U64 if dtype == torch.float64 else U32
    assert np.abs(con.iterate.read(lay, h1) - ref).max() <= error_bound(variant, temp, n, a_max, s_v, u)["total"]


def test_torch_model_equals_numpy_reference_of_the_same_weights():
    phi, p, f, eta = problem(2)
    N = 8
    pts = np.concatenate([f.x, f.x_test[:, None]], axis=1)
    a_max = np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / N
    temp = Temperature(25.0, 1e-3 / a_max)
    con = representation_construction(phi, N, eta, temp, variant="odd")
    tokens = con.encode(p.x, p.y, p.x_test)
    want, states = reference.run(con.weights, tokens, 10)
    got = build_model(con.weights)(torch.from_numpy(tokens), 10).numpy()
    # both are the same algorithm up to rounding: 10 loops of the per-step rounding term
    ref = gd_reference(f, 10, eta)
    bound = gd_emulation_bound(f, ref, eta, temp, "odd", 2 * N + 2, U64)[:, -1].max()
    assert np.abs(con.answer.read(con.layout, got) - con.answer.read(con.layout, want)).max() <= 2 * bound


@pytest.mark.parametrize("variant", sorted({"odd", "paper", DEFAULT_VARIANT}))
def test_twenty_loops_track_numpy_gd_within_the_propagated_bound(variant):
    opts = Options(N=10, d=4, problems=6, seed=3)
    p = REPRESENTATION.draw(np.random.default_rng(3), opts)
    eta = REPRESENTATION.choose_step(p)
    assert (REPRESENTATION.violations(p, opts, eta) == "").all()
    temps = auto_temps(variant, 22, REPRESENTATION.score_bounds(p, eta), torch.float64)
    con = REPRESENTATION.build(opts, eta, temps, variant)
    f = features(p, "representation")
    emu, ref = emulate(con, p, 20), gd_reference(f, 20, eta)
    bound = gd_emulation_bound(f, ref, eta, temps["loop"], variant, 22, U64)   # (B, T+1)
    err = np.abs(emu.iterates - ref.iterates).max(axis=(2, 3))
    assert (err <= bound).all()
    np.testing.assert_array_equal(emu.predictions[:, -1], emu.iterates[:, -1, -1])   # answer = A_T Phi*(x_test)


def test_bad_mlp_is_rejected_with_the_field_named():
    phi = tasks.representation_mlp(3)
    bad = tasks.MLP((phi.weights[0], phi.weights[1][:, :2]), phi.biases[:2], phi.slope)
    with pytest.raises(ValueError, match=r"phi layer 2 has W \(3, 2\)"):
        representation_construction(bad, 4, 0.1, Temperature(20.0, 1e-3))
    with pytest.raises(ValueError, match="eta=-1"):
        representation_construction(phi, 4, -1, Temperature(20.0, 1e-3))
    with pytest.raises(ValueError, match="slope"):
        representation_construction(tasks.MLP(phi.weights, phi.biases, 1.5), 4, 0.1, Temperature(20.0, 1e-3))


def test_paper_generator_is_shared_with_training():
    from algoformer.training.prompts import TaskSpec
    spec = TaskSpec("representation")
    phi = tasks.representation_mlp()
    assert len(phi.weights) == 3 and phi.weights[0].shape == (20, 20)
    for a, b in zip(spec._phi.weights, phi.weights):
        np.testing.assert_array_equal(a, b)
    assert "representation" in ALGORITHMS


def test_problems_outside_the_assumptions_are_reported_not_run(capsys):
    from verify.cli import main
    code = main(["representation", "--N", "6", "--d", "2", "--problems", "3", "--iters", "2", "--dtype", "float64",
                 "--x-bound", "0.01"])
    out = capsys.readouterr().out
    assert code == 1 and "outside the construction's assumptions" in out and "x_bound" in out
    p = REPRESENTATION.draw(np.random.default_rng(0), Options(N=6, d=2, problems=3))
    f = features(p, "representation")
    too_big = 2.0 / np.linalg.eigvalsh(np.einsum("bni,bnj->bij", f.x, f.x) / 6)[:, -1].min()   # every problem diverges
    code = main(["representation", "--N", "6", "--d", "2", "--problems", "3", "--iters", "2", "--dtype", "float64",
                 "--eta", str(too_big), "--quiet"])
    assert code == 1 and "GD diverges" in " ".join(capsys.readouterr().out.split())   # the verdict wraps
