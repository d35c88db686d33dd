"""Builtin ``Command`` entries: checks with arguments and runners of their own (``interface.Command``).

    symbolic LEMMA   the symbolic (sympy) proofs of ``verify.symbolic``: build each lemma's layers with
                     symbolic data and parameters, expand Eq. 1 in e^{-C} and c, compare with the step
"""
from __future__ import annotations

import argparse

from .interface import Command

SYMBOLIC_LEMMAS = ("pairing", "variants", "A.2", "A.3", "A.4", "A.5", "all")


def _symbolic_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lemma", metavar="LEMMA", choices=SYMBOLIC_LEMMAS,
                   help=f"one of {', '.join(SYMBOLIC_LEMMAS)}")


def run_symbolic(args: argparse.Namespace | str) -> int:
    """Print each proof's statement and PROVED/FAILED (with its details); 0 if all hold, else 1."""
    from .symbolic import PROOFS
    lemma = args if isinstance(args, str) else args.lemma
    names = list(PROOFS) if lemma == "all" else [lemma]
    ok = True
    for name in names:
        proof = PROOFS[name]()
        ok &= proof.passed
        print(f"{name}: {'PROVED' if proof.passed else 'FAILED'}: {proof.statement}")
        for line in proof.details:
            print(f"    {line}")
    return 0 if ok else 1


SYMBOLIC = Command(
    name="symbolic", summary="symbolic (sympy) proofs that the built layers compute the steps",
    description="Build each lemma's layers with symbolic data and parameters, expand Eq. 1 in e^{-C} and c, "
                "and compare with the algorithm's step exactly.",
    add_arguments=_symbolic_arguments, run=run_symbolic)
