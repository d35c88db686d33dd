"""Lemma A.1 and the pairing head."""
import math

import numpy as np
import pytest
import torch

from constructions.embeddings import (embedding_dim, exact_pairing_beta, min_margin, pairing_error_bound,
                                      pairing_head, quasi_orthogonal)
from constructions.layout import Layout
from constructions.reference import apply_head


@pytest.mark.parametrize("N", [2, 10, 100, 1000, 10_000])
@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_margin_holds(N, eps):
    P = quasi_orthogonal(N, eps, seed=N)
    assert P.shape[0] == N and set(np.unique(P)) <= {-1, 1}
    assert min_margin(P) > eps
    assert P.shape[1] <= embedding_dim(N, eps) * 2      # O(log N): at most one growth step used


def test_dimension_is_logarithmic():
    assert embedding_dim(10_000, 0.5) < 2.2 * embedding_dim(100, 0.5)
    with pytest.raises(ValueError, match="eps=1.5 is invalid"):
        embedding_dim(10, 1.5)


def test_min_margin_detects_a_violation():
    P = np.array([[1, 1, 1, 1], [1, 1, 1, -1], [-1, 1, -1, 1]], dtype=np.int8)
    assert min_margin(P) == pytest.approx(0.5)        # rows 0 and 1 differ in one of four signs


def _pair_setup(N=30, eps=0.3, seed=0):
    P = quasi_orthogonal(N, eps, seed)
    m = P.shape[1]
    lay = Layout(); lay.add("pos", m); lay.add("v", 1); lay.add("out", 1)
    rng = np.random.default_rng(seed)
    n = 2 * N
    h = np.zeros((1, n, lay.dim))
    h[0, :, lay["pos"]] = np.repeat(P, 2, axis=0)
    h[0, :, lay["v"]] = rng.standard_normal((n, 1))
    V = np.zeros((lay.dim, lay.dim)); V[lay["out"], lay["v"]] = 1.0
    want = h[0, :, lay["v"]].reshape(N, 2).mean(axis=1).repeat(2)
    return lay, h, V, want, n, eps, min_margin(P)


def test_pairing_error_under_bound_and_falling_with_beta():
    lay, h, V, want, n, eps, margin = _pair_setup()
    errs = []
    for beta in [2, 5, 10, 20, 40, 80, 160]:
        out = apply_head(pairing_head(lay, "pos", V, beta), h, causal=False)[0, :, lay["out"]][:, 0]
        err = np.abs(out - want).max()
        bound = pairing_error_bound(n, 2, beta, margin, np.abs(h[0, :, lay["v"]]).max())
        assert err <= bound * (1 + 1e-9) + 1e-14
        errs.append(err)
    assert all(b <= a * (1 + 1e-12) + 1e-15 for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-3 * errs[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairing_is_exact_past_the_underflow_threshold(dtype):
    lay, h, V, want, n, eps, margin = _pair_setup()
    beta = exact_pairing_beta(lay.size("pos"), eps)
    assert beta * eps >= 800 and math.log2(beta / lay.size("pos")).is_integer()
    q = torch.from_numpy(h).to(dtype)
    head = pairing_head(lay, "pos", V, beta)
    scores = (q @ torch.from_numpy(head.query.T).to(dtype)) @ (q @ torch.from_numpy(head.key.T).to(dtype)).transpose(1, 2)
    out = (torch.softmax(scores, -1) @ (q @ torch.from_numpy(V.T).to(dtype)))[0, :, lay["out"]][:, 0]
    v = q[0, :, lay["v"]][:, 0].reshape(-1, 2)
    exact_mean = (0.5 * v[:, 0] + 0.5 * v[:, 1]).repeat_interleave(2)   # the same sum in the dtype
    assert torch.equal(out, exact_mean)
