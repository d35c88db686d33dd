"""Lemma A.5 / Theorem 4.2: the causal GD AlgoFormer against numpy prefix GD, at every position."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from algoformer.tasks import linear_regression
from constructions import reference
from constructions.bridge import build_model
from constructions.causal_gd import (EXCLUDE, causal_gd_construction, mean_error_bound, mean_heads,
                                     x_positions)
from constructions.layout import Layout
from constructions.linearise import Temperature, error_bound
from verify.algorithms import ALGORITHMS  # first: it registers the decoder algorithms
from constructions.scores import decoder_score_bounds as _decoder_scores
from verify.algorithms_decoder import decoder_gd_reference
from verify.cli import main

U64 = 2.0 ** -53
DECODER_GD = ALGORITHMS["decoder-gd"]
N, D = 7, 3


def _problem(seed=0, B=3):
    return linear_regression(np.random.default_rng(seed), B, N, D, 1)


def _build(p, theta, variant="odd", eta=None):
    eta = eta or DECODER_GD.choose_step(p)
    a = _decoder_scores(p, eta)
    temps = {"mean": Temperature(1.0, theta / a["mean"]),
             "post": Temperature(math.log(20 * (2 * N + 2)) + 2 * math.log(1 / theta), theta / a["post"])}
    return causal_gd_construction(D, N, eta, temps, variant), eta, a, temps


def _pre_state(con, p):
    return reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mirror_rows_are_exact(dtype):
    """TF_pre: y_j holds (x_j, y_j), x_{j+1} holds (-x_j, -y_j) and member = 1, bit for bit."""
    p = _problem()
    con, *_ = _build(p, 1e-3)
    lay = con.layout
    model = build_model(con.weights, dtype=dtype)
    h = model.run_pre(torch.from_numpy(con.encode(p.x, p.y, p.x_test)).to(dtype)).double().numpy()
    x = p.x.astype(np.float32 if dtype == torch.float32 else np.float64).astype(float)
    y = p.y.astype(np.float32 if dtype == torch.float32 else np.float64).astype(float)
    ys, xs = np.arange(2, 2 * N + 1, 2), x_positions(N)
    assert np.array_equal(h[:, ys][..., lay["xm"]], x) and np.all(h[:, ys][..., lay["ym"]] == 0)
    assert np.array_equal(h[:, ys][..., lay["y"]], y)                  # the y-token keeps its own label
    assert np.array_equal(h[:, xs[1:]][..., lay["xm"]], -x) and np.array_equal(h[:, xs[1:]][..., lay["ym"]], -y)
    assert np.all(h[:, xs[0]][..., lay["xm"]] == 0) and np.all(h[:, 0][..., lay["xm"]] == 0)
    member = h[0, :, lay.row("member")] + h[0, :, lay.row("is_y")]
    assert member.tolist() == [0, 0] + [1] * (2 * N)          # sink and x_1 lie outside every mirrored set


def test_count_normaliser_is_exact_at_zero_scores():
    """With all data scores 0 the loop heads weigh each visible mirrored key by exactly 1/(2(i-1))."""
    p = _problem()
    p = type(p)(p.x, 0 * p.y, p.x_test, p.y_test)                 # w_0 = 0 and y = 0: every a_j = 0
    con, *_ = _build(p, 1e-3)
    h = _pre_state(con, p)[0]
    head = con.weights.loop[0].heads[0]
    scores = (h @ head.query.T) @ (h @ head.key.T).T
    scores = np.where(np.triu(np.ones_like(scores, bool), 1), -np.inf, scores)
    weights = reference.softmax(scores)
    for i, t in enumerate(x_positions(N)[1:], start=2):
        members = [s for s in range(1, t + 1) if s >= 2]            # y_1 .. y_{i-1}, x_2 .. x_i
        assert len(members) == 2 * (i - 1)
        assert np.all(weights[t, members] == 1.0 / (2 * (i - 1)))
        assert np.all(weights[t, :2] == 0.0)                         # e^{-800} underflows


def test_loop_output_is_the_mirrored_mean_with_the_exact_count():
    """One loop from w_0 = 0 (a_j = -y_j): the heads return -eta f(c)/c with f(c) = sum_{j<i} x_j
    sinh(c a_j) / sum_{j<i} cosh(c a_j) -- the count 2(i-1) cancels exactly; what remains of the
    normaliser is mean cosh(c a) - 1 <= theta^2 / 2, which is part of the theta^2 truncation."""
    p = _problem(seed=6)
    con, eta, a, temps = _build(p, 1e-1)
    _, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), 1)
    got = con.iterate.read(con.layout, states[1])
    c = temps["mean"].c
    ca = -c * p.y[..., 0]                                               # (B, N)
    for i in range(2, N + 2):
        f = np.einsum("bj,bjd->bd", np.sinh(ca[:, :i - 1]), p.x[:, :i - 1]) / np.cosh(ca[:, :i - 1]).sum(1)[:, None]
        assert np.allclose(got[:, i - 1], -eta * f / c * 1.0, rtol=1e-12, atol=1e-14)
        assert np.all(np.cosh(ca[:, :i - 1]).mean(1) - 1 <= (c * np.abs(p.y).max()) ** 2 / 2 * 1.01)


@given(st.integers(1, 12), st.integers(1, 4), st.floats(1e-4, 0.5), st.integers(0, 2**16))
def test_mirrored_mean_within_its_bound(pairs, d, theta, seed):
    """One mirrored-mean head vs mean_j v_j a_j: |error| <= theta^2 max|v| max|a| + rounding."""
    rng = np.random.default_rng(seed)
    lay = Layout(); lay.add("k", d); lay.add("v", 1); lay.add("q", d); lay.add("one", 1); lay.add("out", 1)
    lay.add("excl", 1)
    keys, vals = rng.standard_normal((pairs, d)), rng.standard_normal(pairs)
    h = np.zeros((1, 2 * pairs + 2, lay.dim))
    h[0, :pairs, lay["k"]], h[0, pairs:2 * pairs, lay["k"]] = keys, -keys
    h[0, :pairs, lay.row("v")], h[0, pairs:2 * pairs, lay.row("v")] = vals, -vals
    h[0, 2 * pairs:, lay.row("excl")] = 1.0                          # two excluded keys, value 0
    q = rng.standard_normal(d)
    h[0, :, lay["q"]] = q
    h[0, :, lay.row("one")] = 1.0
    a = keys @ q
    c = theta / np.abs(a).max()
    Q = np.zeros((d, lay.dim)); K = np.zeros((d, lay.dim)); V = np.zeros((lay.dim, lay.dim))
    Q[:, lay["q"]] = np.eye(d); K[:, lay["k"]] = np.eye(d); V[lay.row("out"), lay.row("v")] = 1.0
    excl = np.zeros(lay.dim); excl[lay.row("excl")] = 1.0
    heads = mean_heads(lay, Q, K, excl, V, c, "odd")
    out = sum(reference.apply_head(hd, h, causal=False) for hd in heads)[0, -1, lay.row("out")]
    want = np.mean(vals * a)
    bound = mean_error_bound(theta, pairs, np.abs(vals).max(), np.abs(a).max(), c, U64)["total"]
    assert abs(out - want) <= bound


def test_exclusion_score_underflows():
    assert math.exp(-EXCLUDE) == 0.0 and float(np.exp(np.float32(-EXCLUDE))) == 0.0


def _per_step_bound(p, eta, a, temps, iters):
    """GD on every prefix is non-expansive (eta lambda_max <= 1), so errors add up over the loops:
    T eta (theta^2 max|x| max|a| + rounding) per coordinate (``mean_error_bound``)."""
    theta = temps["mean"].c * a["mean"]
    b = mean_error_bound(theta, N + 1, np.abs(p.x).max(), a["mean"], temps["mean"].c, U64)["total"]
    return iters * eta * b


@pytest.mark.parametrize("theta", [1e-2, 1e-3])
def test_iterates_match_prefix_gd_at_every_position(theta):
    p = _problem(seed=1)
    con, eta, a, temps = _build(p, theta)
    iters = 6
    ref = decoder_gd_reference(p, iters, eta)
    h = con.encode(p.x, p.y, p.x_test)
    out, states = reference.run(con.weights, h, iters)
    for k, s in enumerate(states):
        err = np.abs(con.iterate.read(con.layout, s) - ref.iterates[:, k]).max()
        assert err <= _per_step_bound(p, eta, a, temps, k) + 1e-15
    assert np.all(states[-1][:, 0::2][..., con.layout["w"]] == 0)       # sink and y-tokens: exactly 0


def test_error_falls_as_theta_squared_before_the_floor():
    p = _problem(seed=2)
    errs = []
    for theta in (1e-1, 1e-2):
        con, eta, *_ = _build(p, theta)
        ref = decoder_gd_reference(p, 3, eta)
        _, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), 3)
        errs.append(np.abs(con.iterate.read(con.layout, states[-1]) - ref.iterates[:, -1]).max())
    assert 10 ** 1.5 < errs[0] / errs[1] < 10 ** 2.5                 # theta^2: a factor 100 per decade


def test_prediction_within_the_readout_bound():
    """pred_i = w^i^T x_i by the mirrored read-out: the sink-scheme bound of ``linearise.error_bound``
    with a_max the score bound of the group and sum|v| = 2i - 1 <= 2N + 1 (unit values on the sample
    tokens), plus the iterate's error times |x_i|."""
    p = _problem(seed=3)
    con, eta, a, temps = _build(p, 1e-3)
    iters = 4
    ref = decoder_gd_reference(p, iters, eta)
    out, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), iters)
    got = con.answer.read(con.layout, out)
    w_err = _per_step_bound(p, eta, a, temps, iters) * np.abs(np.concatenate([p.x, p.x_test[:, None]], 1)).sum(-1)
    n = 2 * N + 2
    post = con.weights.notes
    bound = error_bound("odd", Temperature(post["C_post"], post["c_post"]), n, a["post"], 2 * N + 1, U64)["total"]
    assert np.all(np.abs(got - ref.predictions[:, -1])[..., 0] <= bound + w_err)


def test_the_printed_head_includes_the_query_sample():
    """The printed Lemma A.5 key c x_j sits on every x-token, the query's own: its gradient at x_i sums
    over j <= i. That differs from Eq. 6 by far more than our emulation's bound."""
    p = _problem(seed=4)
    con, eta, a, temps = _build(p, 1e-3)
    iters = 5
    _, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), iters)
    ours = con.iterate.read(con.layout, states[-1])
    X = np.concatenate([p.x, p.x_test[:, None]], 1)
    w = np.zeros_like(X)                                              # printed: samples j <= i, x_i without y_i
    for _ in range(iters):
        r = np.einsum("bnd,bjd->bnj", w, X)                            # w^i . x_j
        r[:, :, :N] -= p.y[:, None, :, 0]
        mask = np.tril(np.ones((N + 1, N + 1)))                        # j <= i
        g = np.einsum("bnj,nj,bjd->bnd", r, mask, X) / np.maximum(np.arange(N + 1), 1)[None, :, None]
        w = w - eta * g
    gap = np.abs(w - ours).max()
    assert gap > 1e3 * _per_step_bound(p, eta, a, temps, iters)


def test_torch_matches_numpy_reference():
    p = _problem(seed=5)
    con, eta, *_ = _build(p, 1e-3)
    h = con.encode(p.x, p.y, p.x_test)
    out, states = reference.run(con.weights, h, 3)
    model = build_model(con.weights)
    with torch.no_grad():
        t = model.run_pre(torch.from_numpy(h))
        for _ in range(3):
            t = model.run_loop(t, 1)
        t_out = model.run_post(t).numpy()
    scale = np.abs(out).max()
    assert np.abs(t.numpy() - states[-1]).max() <= 1e-9 * scale
    assert np.abs(t_out - out).max() <= 1e-9 * scale


def test_cli_json_and_bad_arguments(tmp_path, capsys):
    path = tmp_path / "out.json"
    rc = main(["decoder-gd", "--iters", "2", "--N", "5", "--d", "2", "--problems", "3", "--dtype", "float64",
               "--quiet", "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    assert set(data) == {"config", "rows", "verdict", "notes"} and data["config"]["algorithm"] == "decoder-gd"
    assert any(r["status"] == "ok" for r in data["rows"])
    assert main(["decoder-gd", "--N", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--N" in err[0]
