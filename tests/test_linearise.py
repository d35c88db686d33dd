"""The linearisation trick: head weights, orders, and one group's error against its derived bound."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from constructions.layout import Layout
from constructions.linearise import (VARIANTS, Temperature, bilinear_heads, choose_temperature, error_bound,
                                     estimate, head_weights, is_mirror, odd_values, order)
from constructions.reference import apply_head


def test_sinh_weights_cancel_odd_orders_with_half_the_heads():
    """sinh4: two heads (sigma 1, 2) and sum_h w_h sinh(sigma_h z) = z - z^5/30 + ...: the order of
    richardson4's four heads. The odd moments are exact, the even ones are not zero (the heads
    being odd is what removes them)."""
    np.testing.assert_allclose(head_weights("sinh4"), [4 / 3, -1 / 6], rtol=1e-15)
    assert order("sinh4") == 4 and order("sinh8") == 8 and order("sinh12") == 12
    assert abs(sum(head_weights("sinh4") * np.array([1.0, 2.0]) ** 2)) > 0.1


@pytest.mark.parametrize("variant,weights,P", [
    ("paper", [1, -1], 1),                      # the printed constant cancel: (H(c) - H(0)) / c
    ("odd", [0.5, -0.5], 2),                    # (H(c) - H(-c)) / 2c
    ("odd+mirror", [0.5, -0.5], 2),
    ("richardson4", [2 / 3, -2 / 3, -1 / 12, 1 / 12], 4),   # five-point central difference
    # 11- and 13-point central differences; a float Vandermonde solve gave order 10 for the 13-point one
    ("richardson10", [5 / 6, -5 / 6, -5 / 21, 5 / 21, 5 / 84, -5 / 84, -5 / 504, 5 / 504, 1 / 1260, -1 / 1260], 10),
    ("richardson12+mirror", [6 / 7, -6 / 7, -15 / 56, 15 / 56, 5 / 63, -5 / 63, -1 / 56, 1 / 56, 1 / 385, -1 / 385,
                             -1 / 5544, 1 / 5544], 12),
])
def test_head_weights_are_the_classical_differences(variant, weights, P):
    np.testing.assert_allclose(head_weights(variant), weights, rtol=1e-12)
    assert order(variant) == P


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_moments_cancel_up_to_the_order(variant):
    """Every Taylor order 0..P of sum_h w_h exp(sigma_h z) but the linear one cancels; for the sinh
    variants (odd heads) every odd order 3..P-1 of sum_h w_h sinh(sigma_h z)."""
    s, w = np.array(VARIANTS[variant]), head_weights(variant)
    orders = range(1, order(variant) + 1, 2) if odd_values(variant) else range(order(variant) + 1)
    for p in orders:
        assert abs(np.sum(w * s ** p) - (p == 1)) < 1e-12 * max(1.0, float(np.abs(w * s ** p).sum()))
    assert abs(np.sum(w * s ** (order(variant) + 1))) > 1e-6


def group(n, k, m, seed, mirror=False, mirror_values=False):
    """n data tokens and a sink; with ``mirror`` also n tokens holding the negated keys, value 0
    (``mirror_values``: value -v, as the sinh variants need)."""
    lay = Layout(); lay.add("q", k); lay.add("k", k); lay.add("v", m); lay.add("out", m)
    lay.add("is_sink", 1); lay.add("one", 1)
    rng = np.random.default_rng(seed)
    h = np.zeros((1, 2 * n + 1 if mirror else n + 1, lay.dim))
    h[0, :n, lay["q"]] = rng.standard_normal((n, k))
    h[0, :n, lay["k"]] = rng.standard_normal((n, k))
    h[0, :n, lay["v"]] = rng.standard_normal((n, m))
    if mirror:
        h[0, n + 1:, lay["k"]] = -h[0, :n, lay["k"]]
        if mirror_values:
            h[0, n + 1:, lay["v"]] = -h[0, :n, lay["v"]]
    h[0, n, lay.row("is_sink")] = 1.0
    h[0, :, lay.row("one")] = 1.0
    Q = np.zeros((k, lay.dim)); Q[:, lay["q"]] = np.eye(k)
    K = np.zeros((k, lay.dim)); K[:, lay["k"]] = np.eye(k)
    V = np.zeros((lay.dim, lay.dim)); V[lay["out"], lay["v"]] = np.eye(m)
    a = h[0, :n, lay["q"]] @ h[0, :n, lay["k"]].T                   # a[j, i] = q_j . k_i
    want = a @ h[0, :n, lay["v"]]                                   # sum_i v_i a_ji
    return lay, h, Q, K, V, a, want


def run_heads(heads, h, dtype):
    if dtype == "numpy":
        return sum(apply_head(hd, h, False) for hd in heads)
    t = torch.from_numpy(h).to(dtype)
    out = 0
    for hd in heads:
        q = t @ torch.from_numpy(hd.query.T).to(dtype)
        k = t @ torch.from_numpy(hd.key.T).to(dtype)
        out = out + torch.softmax(q @ k.transpose(1, 2), -1) @ (t @ torch.from_numpy(hd.value.T).to(dtype))
    return out.double().numpy()


@given(n=st.integers(2, 30), k=st.integers(1, 4), log_theta=st.floats(-5, -0.3), extra_C=st.floats(0, 30),
       variant=st.sampled_from(list(VARIANTS)), dtype=st.sampled_from(["numpy", torch.float32]),
       seed=st.integers(0, 10**6))
def test_one_group_stays_under_its_bound(n, k, log_theta, extra_C, variant, dtype, seed):
    mirror, mv = is_mirror(variant), odd_values(variant)
    lay, h, Q, K, V, a, want = group(n, k, 2, seed, mirror, mv)
    n_keys = h.shape[1]
    a_max = np.abs(a).max()
    theta = 10.0 ** log_theta
    u = 2.0 ** -53 if dtype == "numpy" else 2.0 ** -24
    C = 0.0 if mirror else math.log(n) + extra_C
    if dtype != "numpy" and C - math.log(theta / a_max) > 80:
        return                                                       # beyond float32's range
    temp = Temperature(C, theta / a_max)
    got = run_heads(bilinear_heads(lay, Q, K, V, temp, variant, n_keys=n_keys, mirrored_values=mv),
                    h, dtype)[0, :n, lay["out"]]
    s_v = np.abs(h[0, :n, lay["v"]]).sum(axis=0).max()
    bound = error_bound(variant, temp, n_keys, a_max, s_v, u)["total"]
    assert np.abs(got - want).max() <= bound


def test_error_falls_with_order_at_small_theta():
    lay, h, Q, K, V, a, want = group(20, 3, 1, 0)
    errs = {}
    for variant in ("paper", "odd", "richardson4"):
        temp = Temperature(45.0, 1e-2 / np.abs(a).max())
        got = run_heads(bilinear_heads(lay, Q, K, V, temp, variant), h, "numpy")[0, :20, lay["out"]]
        errs[variant] = np.abs(got - want).max()
    assert errs["paper"] > 10 * errs["odd"] > 100 * errs["richardson4"]


def test_leakage_falls_like_e_minus_C():
    """Defect 5 of the printed proofs: e^C softmax ~ 1 + c a ignores the other keys in the
    denominator. At fixed small theta the error is the leakage n e^{-C}: raising C by 2 divides it
    by about e^2."""
    lay, h, Q, K, V, a, want = group(20, 3, 1, 1)
    c = 1e-3 / np.abs(a).max()
    e = [np.abs(run_heads(bilinear_heads(lay, Q, K, V, Temperature(C, c), "richardson4"), h, "numpy")
                [0, :20, lay["out"]] - want).max() for C in (6.0, 8.0)]
    assert 0.5 * math.exp(-2) < e[1] / e[0] < 2 * math.exp(-2)


@pytest.mark.parametrize("u,log_max", [(2.0 ** -53, 690.0), (2.0 ** -24, 75.0)])
@pytest.mark.parametrize("variant", ["odd", "richardson4"])
def test_automatic_temperature_is_near_the_estimated_optimum(u, log_max, variant):
    t = choose_temperature(variant, 82, 1.0, u, log_max)
    est = lambda T: float(sum(estimate(variant, T.c, T.C, 82, u)))
    for dC in (-2.0, 2.0):
        assert est(Temperature(t.C + dC, t.c)) >= est(t)
    for f in (0.3, 3.0):
        assert est(Temperature(t.C, t.c * f)) >= est(t)
    assert t.C - math.log(t.c) <= log_max


def test_mirror_temperature_has_no_sink():
    t = choose_temperature("odd+mirror", 82, 2.0, 2.0 ** -24, 75.0)
    assert t.C == 0.0 and 0 < t.c * 2.0 < 1
