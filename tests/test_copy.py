"""Lemma A.3: the q-head copy block, its error bound, the exact zeroing of empty slots."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from constructions import reference
from constructions.bridge import build_model
from constructions.copy import (copy_block, copy_construction, copy_error_bound, gate, sequence_layout,
                                window_reference)
from verify.cli import main

U = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24}


def run_block(con, x, dtype=None, layers=2):
    """numpy reference (dtype None) or the torch model, through the first ``layers`` pre layers."""
    h = con.encode(x)
    if dtype is None:
        return reference.apply_stack(con.weights.pre[:layers], h)
    model = build_model(con.weights, dtype=dtype)
    t = torch.from_numpy(h).to(dtype)
    with torch.no_grad():
        for layer in model.pre[:layers]:
            t = layer(t)
    return t.double().numpy()


def has_prev(N, q, d):
    t = np.arange(N)[:, None]
    return t >= (q - np.arange(q * d)[None, :] // d)      # window row -> its shift i = q - block


@settings(max_examples=12)
@given(N=st.integers(2, 12), d=st.integers(1, 3), q=st.integers(1, 4), seed=st.integers(0, 3),
       dtype=st.sampled_from([torch.float64, torch.float32, None]))
def test_copy_is_exact_at_the_default_beta(N, d, q, seed, dtype):
    """beta margin >= 800 and beta/m a power of two: every other weight underflows, the target's is 1."""
    con = copy_construction(d, N, q, seed=seed)
    x = np.random.default_rng(seed).standard_normal((2, N, d))
    if dtype is torch.float32:
        x = x.astype(np.float32).astype(np.float64)
    got = con.answer.read(con.layout, run_block(con, x, dtype))
    np.testing.assert_array_equal(got, window_reference(x, q))


def test_window_is_the_q_values_before_each_token_oldest_first():
    con = copy_construction(1, 6, 3)
    x = np.arange(1.0, 7.0).reshape(1, 6, 1)                   # x_0 .. x_5 = 1 .. 6
    got = con.answer.read(con.layout, run_block(con, x))[0]
    want = [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("q", [1, 3])
def test_error_within_the_bound_and_falling_with_beta(q):
    N, d = 16, 2
    con0 = copy_construction(d, N, q)
    m, margin = con0.pos.shape[1], con0.assumptions["margin"]
    x = np.random.default_rng(q).standard_normal((3, N, d))
    mask = has_prev(N, q, d)
    errs = []
    for k in range(-6, 6):
        beta = m * 2.0 ** k
        con = copy_construction(d, N, q, beta=beta)
        raw = con.answer.read(con.layout, run_block(con, x, layers=1))          # after the heads
        err = np.where(mask, np.abs(raw - window_reference(x, q)), 0.0).max()
        bound = copy_error_bound(N, beta, margin, np.abs(x).max()) + (N + 2) * U[torch.float64] * np.abs(x).max()
        assert err <= bound
        errs.append(err)
    assert all(b <= a * (1 + 1e-9) + 1e-15 for a, b in zip(errs, errs[1:]))
    assert errs[-1] == 0.0 and errs[0] > 0.1


@pytest.mark.parametrize("beta_factor", [2.0 ** -4, 1.0, 2.0 ** 8])
def test_empty_slots_are_zeroed_exactly_by_the_ffn_at_any_beta(beta_factor):
    N, d, q = 8, 2, 3
    m = copy_construction(d, N, q).pos.shape[1]
    con = copy_construction(d, N, q, beta=m * beta_factor)
    x = np.random.default_rng(0).standard_normal((2, N, d)) + 3.0
    empty = ~has_prev(N, q, d)
    before = con.answer.read(con.layout, run_block(con, x, layers=1))
    after = con.answer.read(con.layout, run_block(con, x, layers=2))
    assert np.abs(before[:, empty]).min() > 0.5           # the heads leave garbage there (x > 0 on average)
    np.testing.assert_array_equal(after[:, empty], 0.0)
    np.testing.assert_array_equal(after[:, ~empty], before[:, ~empty])   # and leave filled slots alone


@given(N=st.integers(1, 30), q=st.integers(1, 6))
def test_gates_are_exact_indicators_of_an_empty_slot(N, q):
    con = copy_construction(1, N, q)
    h = run_block(con, np.ones((1, N, 1)), layers=1)
    t = np.arange(N)
    for i in range(1, q + 1):
        np.testing.assert_array_equal(h[0, :, con.layout.row(gate(i))], (t < i).astype(float))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_model_equals_numpy_reference_of_the_same_weights(dtype):
    """At a beta where the copy is not exact (both compute the same softmax average), the two differ
    only by rounding: <= 2 (n + 2) u max|x| per slot."""
    N, d, q = 12, 3, 2
    m = copy_construction(d, N, q).pos.shape[1]
    con = copy_construction(d, N, q, beta=m / 4)
    x = np.random.default_rng(1).standard_normal((2, N, d)).astype(np.float32).astype(np.float64)
    got = con.answer.read(con.layout, run_block(con, x, dtype))
    want = con.answer.read(con.layout, run_block(con, x))
    assert np.abs(got - want).max() <= 2 * (N + 2) * U[dtype] * np.abs(x).max()


def test_bad_arguments_name_the_field():
    lay = sequence_layout(2, 3, 5)
    with pytest.raises(ValueError, match="q=2"):
        copy_block(lay, 2, 100.0, 10.0)
    with pytest.raises(ValueError, match="beta=0"):
        copy_block(lay, 3, 0, 10.0)
    with pytest.raises(ValueError, match="q=0 is invalid"):
        copy_construction(2, 5, 0)


def test_cli_copy_prints_table_verdict_and_json_rows_like_newton(tmp_path, capsys):
    path = tmp_path / "copy.json"
    assert main(["copy", "--N", "10", "--d", "2", "--q", "2", "--problems", "3", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "configuration:" in out and "q=2" in out and "verdict:" in out and "within its bound" in out
    doc = json.loads(path.read_text())
    keys = {"algorithm", "variant", "dtype", "device", "theta", "C", "c", "error_iterate", "error_prediction",
            "median_iterate", "median_prediction", "growth", "bound_step", "status", "auto", "bound_T"}
    assert doc["rows"] and all(set(r) == keys for r in doc["rows"])
    # lost exactly where the block error passes 0.5 (the smallest betas: a near-uniform softmax), else ok
    assert all(r["status"] == ("lost" if r["error_prediction"] > 0.5 else "ok") for r in doc["rows"])
    assert any(r["status"] == "lost" for r in doc["rows"]) and any(r["status"] == "ok" for r in doc["rows"])
    assert {r["dtype"] for r in doc["rows"]} == {"float32", "float64"}
    assert main(["copy", "--q", "10", "--N", "10"]) == 2
