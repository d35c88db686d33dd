"""Theorem 3.3: the chain-of-thought AlgoFormer (filter, sigma^{-1}, GD, sigma) against numpy."""
import json
import math

import numpy as np
import pytest
import torch

from algoformer import tasks
from constructions import reference
from constructions.bridge import build_model
from constructions.chain_of_thought import cot_construction, cot_positions
from constructions.linearise import Temperature, error_bound
from verify.algorithms import ALGORITHMS, Options  # first: it registers the decoder algorithms
from verify.algorithms_decoder import _cot_pairs, cot_reference
from verify.cli import main

U64 = 2.0 ** -53
COT = ALGORITHMS["cot"]
N, D, L = 9, 3, 4


def _problem(seed=0, B=6):
    p = COT.draw(np.random.default_rng(seed), Options(N=N, d=D, problems=B), L)
    return p


def _build(p, theta, variant="odd"):
    eta = COT.choose_step(p)
    a = COT.score_bounds(p, eta)["loop"]
    n = cot_positions(N, L)[1]
    temp = Temperature(math.log(20 * n) + 2 * math.log(1 / theta), theta / a)
    return cot_construction(D, N, eta, temp, L=L, variant=variant), eta, a, temp


def test_generator_is_the_papers_chain():
    states, W = tasks.chain_of_thought(np.random.default_rng(0), 2, N, D, L)
    for l in range(L):
        want = tasks.leaky_relu(np.einsum("bij,bnj->bni", W[:, l], states[:, :, l]))
        assert np.array_equal(states[:, :, l + 1], want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_filter_keeps_exactly_the_pairs_of_step_l(dtype):
    """TF_pre, bit for bit: x = s^l on the inputs and the query, xN = +-s^l/N on inputs / targets,
    r = -sigma^{-1}(s^{l+1}) on the inputs, everything else 0 -- for each problem's own l."""
    p = _problem()
    assert len(set(p.y.tolist())) > 1                                  # several steps l in one batch
    con, *_ = _build(p, 1e-3)
    lay = con.layout
    model = build_model(con.weights, dtype=dtype)
    h = model.run_pre(torch.from_numpy(con.encode(p.x, p.y, p.x_test)).to(dtype)).double().numpy()
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    cast = lambda a: np.asarray(a, np_dtype).astype(float)
    u, v, q = (cast(t) for t in _cot_pairs(p))
    t0, n = cot_positions(N, L)
    B = len(p.y)
    want_x = np.zeros((B, n, D)); want_xN = np.zeros((B, n, D)); want_r = np.zeros((B, n, D))
    for b, l in enumerate(p.y):
        inputs = np.arange(N) * (L + 1) + l
        want_x[b, inputs] = u[b]; want_x[b, t0 + l] = q[b]
        want_xN[b, inputs] = cast(u[b] * np_dtype(1.0 / N)); want_xN[b, inputs + 1] = -want_xN[b, inputs]
        want_r[b, inputs] = -v[b]
    assert np.array_equal(h[..., lay["x"]], want_x)
    assert np.array_equal(h[..., lay["xN"]], want_xN)
    u_rel = 4 * float(np.finfo(np_dtype).eps)                          # 1/a z against z / a: one rounding each
    assert np.all(np.abs(h[..., lay["r"]] - want_r) <= u_rel * np.abs(want_r))
    assert np.all(h[..., lay["tl"]] == np.eye(L + 1)[p.y][:, None, :])   # l found from the query's position


def test_gd_loop_within_the_lemma_a2_bound():
    """After T loops every token's r is within T eta n-sum of the per-step bound of ``linearise``."""
    p = _problem(seed=1)
    con, eta, a, temp = _build(p, 1e-3)
    iters = 5
    ref = cot_reference(p, iters, eta)
    out, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), iters)
    n = cot_positions(N, L)[1]
    u, v, q = _cot_pairs(p)
    r_sum = np.abs(ref.iterates).sum(axis=2).max()                      # sum_i |r_i| over the loops
    step = error_bound("odd", temp, n, a, r_sum, U64)["total"]
    for k, s in enumerate(states):
        err = np.abs(con.iterate.read(con.layout, s) - ref.iterates[:, k]).max()
        assert err <= k * eta * step * (1 + 1e-9) + 1e-15
    # TF_post: the answer is r of the query, then sigma exactly
    pred = con.answer.read(con.layout, out)
    ans = out[:, -1, con.layout["answer"]]
    assert np.array_equal(pred, tasks.leaky_relu(ans))
    assert np.abs(ans - ref.iterates[np.arange(len(p.y)), -1, cot_positions(N, L)[0] + p.y]).max() \
        <= iters * eta * step + 1e-15


def test_inverting_sigma_makes_the_step_linear():
    """Noise-free chains: v_i = sigma^{-1}(s^{l+1}_i) = W_{l+1} s^l_i exactly, so least squares on the kept
    pairs (N > d) recovers W_{l+1} and sigma(A s^l) is the true s^{l+1}: the fixed point GD heads for."""
    p = _problem(seed=2)
    u, v, q = _cot_pairs(p)
    for b in range(len(p.y)):
        A = np.linalg.lstsq(u[b], v[b], rcond=None)[0].T
        assert np.abs(u[b] @ A.T - v[b]).max() <= 1e-10 * np.abs(v[b]).max()
        assert np.abs(tasks.leaky_relu(A @ q[b]) - p.y_test[b]).max() <= 1e-10 * np.abs(p.y_test[b]).max() + 1e-14


def test_layer_and_head_counts():
    """Ours: TF_pre 2 layers (3 heads + FFN, FFN), TF_loop 1 layer 2 heads, TF_post 1 layer 1 head;
    the paper: 7 layers 2 heads, 1 layer 2 heads, 1 layer 1 head."""
    con, *_ = _build(_problem(), 1e-3)
    w = con.weights
    assert [len(l.heads) for l in w.pre] == [3, 0] and [l.ffn is not None for l in w.pre] == [True, True]
    assert [len(l.heads) for l in w.loop] == [2] and [len(l.heads) for l in w.post] == [1]


def test_torch_matches_numpy_reference():
    p = _problem(seed=3)
    con, *_ = _build(p, 1e-3)
    h = con.encode(p.x, p.y, p.x_test)
    out, states = reference.run(con.weights, h, 3)
    model = build_model(con.weights)
    with torch.no_grad():
        t = model.run_pre(torch.from_numpy(h))
        for _ in range(3):
            t = model.run_loop(t, 1)
        t_out = model.run_post(t).numpy()
    assert np.abs(t.numpy() - states[-1]).max() <= 1e-9 * np.abs(states[-1]).max()
    assert np.abs(t_out - out).max() <= 1e-9 * np.abs(out).max()


def test_bad_step_index_is_an_error():
    p = _problem()
    con, *_ = _build(p, 1e-3)
    with pytest.raises(ValueError, match="steps must lie in"):
        con.encode(p.x, np.full_like(p.y, L), p.x_test)


def test_cli_json_and_bad_arguments(tmp_path, capsys):
    path = tmp_path / "out.json"
    rc = main(["cot", "--iters", "2", "--N", "6", "--d", "2", "--problems", "3", "--dtype", "float64",
               "--quiet", "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    assert set(data) == {"config", "rows", "verdict", "notes"} and data["config"]["algorithm"] == "cot"
    assert any(r["status"] == "ok" for r in data["rows"])
    assert main(["cot", "--eta", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--eta" in err[0]
