"""Theorem 3.2: AR(q) with representation; the window indexing, made exact and tested."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from algoformer import tasks
from constructions import reference
from constructions.autoregressive import ar_construction, sample_tokens
from constructions.bridge import build_model
from constructions.linearise import DEFAULT_VARIANT, Temperature, error_bound
from verify.algorithms_representation import AR, ar_problem, features, gd_emulation_bound
from verify.algorithms import Options
from verify.cli import main
from verify.emulate import emulate
from verify.references import gd_reference
from verify.sweep import auto_temps

U64, U32 = 2.0 ** -53, 2.0 ** -24


def lagged_regression(seq, q, lag):
    """Samples: window of q values ending at x_{t-lag}, label x_t (1-based, t = q+lag .. N); query: the
    last q values. lag = 1 is AR(q); lag = 0 is the printed proof's token (its window contains its own
    label); lag = 2 pairs each window with the value after next."""
    B, n1, d = seq.shape
    N = n1 - 1
    win = lambda end: seq[:, end - q:end].reshape(B, q * d)           # 0-based exclusive end
    ts = range(q + lag, N + 1)                                          # 1-based label index t
    x = np.stack([win(t - lag) for t in ts], 1)
    y = np.stack([seq[:, t - 1] for t in ts], 1)
    return tasks.Regression(x, y, win(N), seq[:, N])


def test_ar_regression_pairs_each_window_with_the_value_after_it():
    seq = np.arange(1.0, 8.0).reshape(1, 7, 1)                         # x_1 .. x_6, x_7
    r = tasks.ar_regression(seq, 2)
    np.testing.assert_array_equal(r.x[0], [[1, 2], [2, 3], [3, 4], [4, 5]])
    np.testing.assert_array_equal(r.y[0, :, 0], [3, 4, 5, 6])
    np.testing.assert_array_equal(r.x_test[0], [5, 6])
    assert r.y_test[0, 0] == 7
    lag1 = lagged_regression(seq, 2, 1)
    np.testing.assert_array_equal(lag1.x, r.x)
    np.testing.assert_array_equal(lag1.y, r.y)


def identity_phi(q, d, const=False):
    """Phi*(w) = w (+ a constant feature 1) on positive windows: leaky(w) = w for w >= 0."""
    W = np.eye(q * d)
    b = np.zeros(q * d)
    if const:
        W, b = np.vstack([W, np.zeros((1, q * d))]), np.r_[b, 1.0]
    return tasks.MLP((W,), (b,), 0.25)


def run(con, seq_prompt, iters, dtype=torch.float64):
    B, N, d = seq_prompt.shape
    q = con.q
    p = tasks.Regression(seq_prompt, seq_prompt, seq_prompt[:, N - q:].reshape(B, q * d), np.zeros((B, d)))
    return emulate(con, p, iters, dtype)


def test_off_by_one_changes_the_answer_and_the_construction_gets_it_right():
    """x_t = 1.5^t, q = 1, Phi* = identity: one GD step with eta = 1/lambda solves the 1-d regression.
    Right pairing (x_{t-1} -> x_t): A = 1.5, prediction 1.5 x_N. The printed token (x_t -> x_t): A = 1,
    prediction x_N. One further (x_{t-2} -> x_t): A = 2.25. The construction must give 1.5 x_N."""
    N, q = 8, 1
    seq = 1.5 ** np.arange(1, N + 2, dtype=float).reshape(1, N + 1, 1)
    f = tasks.ar_regression(seq, q)
    eta = float(f.x.shape[1] / np.sum(f.x ** 2))
    temp = Temperature(30.0, 1e-4 / (np.abs(f.x).max() * max(np.abs(f.x).max(), np.abs(f.x_test).max()) / (N - q)))
    con = ar_construction(identity_phi(q, 1), q, N, eta, temp, variant="odd")
    pred = run(con, seq[:, :N], 3).predictions[0, -1, 0]
    want = gd_reference(f, 3, eta).predictions[0, -1, 0]
    assert want == pytest.approx(1.5 * seq[0, N - 1, 0], rel=1e-12)
    bound = gd_emulation_bound(f, gd_reference(f, 3, eta), eta, temp, "odd", N + 2, U64)[0, -1]
    assert abs(pred - want) <= bound
    for lag in (0, 2):
        wrong = gd_reference(lagged_regression(seq, q, lag), 3, eta).predictions[0, -1, 0]
        assert abs(wrong - want) > 1e6 * bound


def test_ar2_window_order_and_lag_on_a_sinusoid():
    """x_t = 2 + cos(t), q = 2, Phi*(w) = (w, 1): x_t = 2cos(1) x_{t-1} - x_{t-2} + const exactly.
    After 20 loops the construction tracks GD on the lag-1 windows within the propagated bound, and
    GD on lag 0 or 2 is far off. (A reversed window would give the same answer here: GD from 0 is
    equivariant to permuting features. The order is checked exactly in the pre-transformer test.)"""
    N, q = 14, 2
    seq = (2.0 + np.cos(np.arange(1, N + 2, dtype=float))).reshape(1, N + 1, 1)
    phi = identity_phi(q, 1, const=True)
    r = tasks.ar_regression(seq, q)
    f = tasks.Regression(phi(r.x), r.y, phi(r.x_test), r.y_test)
    eta = float(1.0 / np.linalg.eigvalsh(f.x[0].T @ f.x[0] / (N - q))[-1])
    pts = np.concatenate([f.x, f.x_test[:, None]], 1)
    a_max = np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / (N - q)
    temp = Temperature(30.0, 1e-4 / a_max)
    con = ar_construction(phi, q, N, eta, temp, variant="odd")
    emu = run(con, seq[:, :N], 20)
    ref = gd_reference(f, 20, eta)
    bound = gd_emulation_bound(f, ref, eta, temp, "odd", N + 2, U64)
    assert (np.abs(emu.iterates - ref.iterates).max(axis=(2, 3)) <= bound).all()
    want = ref.predictions[0, -1, 0]
    for g in (lagged_regression(seq, q, 0), lagged_regression(seq, q, 2)):
        g = tasks.Regression(phi(g.x), g.y, phi(g.x_test), g.y_test)
        wrong = gd_reference(g, 20, eta).predictions[0, -1, 0]
        assert abs(wrong - want) > 1e3 * bound[0, -1]


def small(seed, N=10, q=3, d=2, B=3):
    phi = tasks.ar_mlp(q, d)
    seq, _ = tasks.ar_sequence(np.random.default_rng(seed), B, phi, q, N, d)
    p = ar_problem(seq, q)
    f = features(p, "ar")
    eta = float(0.5 / np.linalg.eigvalsh(np.einsum("bni,bnj->bij", f.x, f.x) / (N - q))[:, -1].max())
    pts = np.concatenate([f.x, f.x_test[:, None]], 1)
    a_max = np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / (N - q)
    return phi, seq, p, f, eta, a_max


def test_pre_puts_each_pair_on_one_token_and_forms_the_registers_exactly():
    phi, seq, p, f, eta, a_max = small(0)
    N, q, d = 10, 3, 2
    con = ar_construction(phi, q, N, eta, Temperature(25.0, 1e-3 / a_max), variant="odd")
    lay = con.layout
    h = reference.apply_stack(con.weights.pre, con.encode(p.x))
    r = tasks.ar_regression(seq, q)
    toks = sample_tokens(N, q)
    np.testing.assert_array_equal(h[:, toks[:-1], lay["win"]], r.x)          # window before token t
    np.testing.assert_array_equal(h[:, N, lay["win"]], r.x_test)             # the test token's window
    np.testing.assert_array_equal(h[:, toks[:-1], lay["r"]], -r.y)           # A_0 Phi* - x_t, A_0 = 0
    np.testing.assert_array_equal(np.delete(h[:, :, lay["r"]], toks[:-1], axis=1), 0.0)
    feats = h[:, toks, lay["x"]]
    np.testing.assert_allclose(feats[:, :-1], f.x, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(h[:, toks[:-1], lay["xN"]], feats[:, :-1] * (1.0 / (N - q)))
    np.testing.assert_array_equal(np.delete(h[:, :, lay["xN"]], toks[:-1], axis=1), 0.0)
    np.testing.assert_array_equal(h[:, :q, lay["x"]], 0.0)                   # incomplete windows: no features
    np.testing.assert_array_equal(h[:, N + 1, lay["x"]], 0.0)                # the sink


def test_partner_tokens_hold_the_mirrored_keys_exactly():
    """Mirror variants: each value token's partner gathers the same window and features, and holds
    the negated key with query 0 and value 0."""
    phi, seq, p, f, eta, a_max = small(4)
    N, q = 10, 3
    con = ar_construction(phi, q, N, eta, Temperature(0.0, 1e-3 / a_max), variant="odd+mirror")
    lay = con.layout
    h = reference.apply_stack(con.weights.pre, con.encode(p.x))
    assert h.shape[1] == 2 * N + 2
    toks = sample_tokens(N, q, partners=True)
    partners = [t + 1 for t in toks[:-1]]
    np.testing.assert_array_equal(h[:, toks[:-1], lay["win"]], tasks.ar_regression(seq, q).x)
    np.testing.assert_array_equal(h[:, partners, lay["win"]], h[:, toks[:-1], lay["win"]])
    np.testing.assert_array_equal(h[:, partners, lay["xN"]], -h[:, toks[:-1], lay["xN"]])
    for reg in ("x", "r"):
        np.testing.assert_array_equal(h[:, 1::2][:, :N, lay[reg]], 0.0)
    keys = h[:, :, lay["xN"]]
    np.testing.assert_array_equal(np.sort(keys, axis=1), np.sort(-keys, axis=1))   # a symmetric key set


@settings(max_examples=8)
@given(seed=st.integers(0, 10**6), log_theta=st.floats(-4, -1), dtype=st.sampled_from([torch.float64, torch.float32]),
       variant=st.sampled_from(["odd", "paper", "richardson4", "odd+mirror", "richardson4+mirror"]))
def test_one_loop_matches_numpy_gd_within_the_bound(seed, log_theta, dtype, variant):
    phi, seq, p, f, eta, a_max = small(seed)
    N, q = 10, 3
    n = 2 * N + 2 if variant.endswith("+mirror") else N + 2
    temp = Temperature(30.0 if dtype == torch.float64 else 18.0, 10 ** log_theta / a_max)
    con = ar_construction(phi, q, N, eta, temp, variant=variant)
    h0 = reference.apply_stack(con.weights.pre, con.encode(p.x))
    h1 = build_model(con.weights, dtype=dtype).run_loop(torch.from_numpy(h0).to(dtype), 1).double().numpy()
    s_v = eta * np.abs(h0[:, :, con.layout["r"]]).sum(axis=1).max()
    bound = error_bound(variant, temp, n, a_max, s_v, U64 if dtype == torch.float64 else U32)["total"]
    assert np.abs(con.iterate.read(con.layout, h1) - gd_reference(f, 1, eta).iterates[:, 1]).max() <= bound


def test_torch_model_equals_numpy_reference_of_the_same_weights():
    phi, seq, p, f, eta, a_max = small(1)
    N, q = 10, 3
    temp = Temperature(25.0, 1e-3 / a_max)
    con = ar_construction(phi, q, N, eta, temp, variant="odd")
    tokens = con.encode(p.x)
    want, _ = reference.run(con.weights, tokens, 8)
    got = build_model(con.weights)(torch.from_numpy(tokens), 8).numpy()
    bound = gd_emulation_bound(f, gd_reference(f, 8, eta), eta, temp, "odd", N + 2, U64)[:, -1].max()
    assert np.abs(con.answer.read(con.layout, got) - con.answer.read(con.layout, want)).max() <= 2 * bound


def test_twenty_loops_at_the_automatic_temperature_track_numpy_gd():
    opts = Options(N=8, d=2, problems=2, seed=2, q=3)
    p = AR.draw(np.random.default_rng(2), opts)
    eta = AR.choose_step(p)
    assert (AR.violations(p, opts, eta) == "").all()
    temps = auto_temps("odd", opts.N + 2, AR.score_bounds(p, eta), torch.float64)
    con = AR.build(opts, eta, temps, "odd")
    f = features(p, "ar")
    emu, ref = emulate(con, p, 20), gd_reference(f, 20, eta)
    bound = gd_emulation_bound(f, ref, eta, temps["loop"], "odd", opts.N + 2, U64)
    assert (np.abs(emu.iterates - ref.iterates).max(axis=(2, 3)) <= bound).all()
    np.testing.assert_array_equal(emu.predictions[:, -1], emu.iterates[:, -1, -1])   # answer = A_T Phi*(query)


def test_bad_arguments_name_the_field():
    phi = tasks.ar_mlp(3, 2)
    t = Temperature(20.0, 1e-3)
    with pytest.raises(ValueError, match="N=3 is invalid"):
        ar_construction(phi, 3, 3, 0.1, t, variant="odd")
    with pytest.raises(ValueError, match="multiple of q=4"):
        ar_construction(phi, 4, 10, 0.1, t, variant="odd")


def test_paper_generators_are_shared_with_training():
    from algoformer.training.prompts import TaskSpec
    phi = tasks.ar_mlp()
    assert [W.shape for W in phi.weights] == [(20, 60), (20, 20), (20, 20)]
    for a, b in zip(TaskSpec("ar")._phi.weights, phi.weights):
        np.testing.assert_array_equal(a, b)


def test_cli_ar_prints_table_verdict_and_json(tmp_path, capsys):
    path = tmp_path / "ar.json"
    code = main(["ar", "--N", "6", "--d", "1", "--q", "2", "--problems", "2", "--iters", "1", "--dtype", "float64",
                 "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "configuration:" in out and "verdict:" in out and "floor" in out
    doc = json.loads(path.read_text())
    assert {r["variant"] for r in doc["rows"]} == {DEFAULT_VARIANT} and doc["config"]["q"] == 2
    assert doc["config"]["m"] == 1 and all(r["algorithm"] == "ar" for r in doc["rows"])
    assert main(["ar", "--q", "0"]) == 2 and main(["ar", "--N", "3", "--q", "3"]) == 2
