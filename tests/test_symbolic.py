"""Symbolic proofs (``verify.symbolic``): each holds, the CLI runs them, and the checker can fail."""
import contextlib
import io

import numpy as np
import pytest
import sympy as sp

import verify.symbolic as S
from verify.cli import main
from verify.symbolic_engine import ProofError, identify_arrays


@pytest.mark.parametrize("name", list(S.PROOFS))
def test_proof_holds(name):
    proof = S.PROOFS[name]()
    assert proof.name == name and proof.statement
    assert proof.passed, "\n".join(proof.details)


def test_cli_runs_one_lemma_and_rejects_unknown():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["symbolic", "A.3"]) == 0
    assert out.getvalue().startswith("A.3: PROVED: Lemma A.3")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["symbolic", "A.9"]) == 2
    assert err.getvalue().count("\n") == 1 and "invalid choice" in err.getvalue()


@pytest.mark.parametrize("sigmas,weights,P", [
    ((1, -1), (1, -1), None),                                   # 2z: not the identity to first order
    ((1, 0), (1, 0), None),                                     # no constant cancel
    ((1, -1, 2, -2), (sp.Rational(1, 2), -sp.Rational(1, 2), 0, 0), 2),   # odd weights: only P = 2, not 4
    ((1, -1, 2, -2), (sp.Rational(2, 3), -sp.Rational(2, 3), -sp.Rational(1, 12), sp.Rational(1, 12)), 4),
])
def test_linearisation_order_detects_wrong_weights(sigmas, weights, P):
    assert S.linearisation_order(sigmas, weights)[0] == P


def test_printed_newton_ffn_is_not_the_step():
    """CONSTRUCTIONS.md defect 1: the row after the printed heads is M x + c M S M x, and no per-row
    scalar (the printed 'weight 1/c' or any other) turns it into 2 M x - M S M x for c > 0."""
    works, msgs = S.printed_newton_claim()
    assert not works and "(True)" in msgs[0]


def test_wrong_step_size_in_the_weights_fails(monkeypatch):
    real = S.gd_construction
    monkeypatch.setattr(S, "gd_construction", lambda d, N, eta, temp, **kw: real(d, N, 1.5 * eta, temp, **kw))
    ok, msgs = S.gd_loop_claim("odd")
    assert not ok and "leading term" in msgs[0]


def test_claiming_a_higher_order_than_the_variant_has_fails(monkeypatch):
    monkeypatch.setitem(S.BASE_ORDER, "paper", 2)              # the paper pair keeps its c^1 term
    ok, msgs = S.gd_loop_claim("paper")
    assert not ok and "eps^0 c^1 term" in msgs[0]


def test_weights_outside_the_families_are_rejected():
    samples = [np.array([[p ** 2]]) for p in (1.0, 0.5, 0.3)]     # c^2: not one of the families
    with pytest.raises(ProofError, match="fits none"):
        identify_arrays(samples, ("1", "c", "e^C/c"), "w")


def test_outside_weight_certificate_is_an_identity():
    assert all(S.outside_weight_certificate(k) for k in range(1, 6))
