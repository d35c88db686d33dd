"""Worked example (docs/worked-example.md): Richardson iteration x <- x + omega (b - A x), in context.

Not in the AlgoFormer paper. The prompt holds the system: token i (i < d) carries row a_i of A, b_i,
the one-hot code e_i and the iterate's component x_i; token d + i carries -e_i only (the mirrored
key set the ``mirror`` variants need). One loop layer: linearised heads with query a_j, key e_i and
value -omega x_i give -omega sum_i A_ji x_i = -omega (A x)_j; its FFN adds omega b_j exactly.
Run it: ``python docs/examples/richardson.py --iters 30 --d 8``.
"""
import sys

import numpy as np

from algoformer.tasks import Regression
from constructions.api import (AlgoFormerWeights, Construction, Layout, LayerWeights, Readout, bilinear_heads,
                               identity, is_mirror, move, odd_values)
from verify.interface import Algorithm
from verify.references import Trajectory


class RichardsonConstruction(Construction):
    """x = A (B, d, d), y = b (B, d, 1), x_test = x_0 (B, d) -> 2d tokens."""
    def encode(self, x, y, x_test):
        B, d, _ = x.shape
        h = np.zeros((B, 2 * d, self.layout.dim))
        h[:, :d, self.layout["a"]], h[:, :d, self.layout["b"]], h[:, :d, self.layout["x"]] = x, y, x_test[..., None]
        h[:, :, self.layout["e"]] = np.concatenate([np.eye(d), -np.eye(d)])
        return h

    def token_roles(self):
        d = self.layout.size("e")
        return [f"row_{i}" for i in range(1, d + 1)] + [f"mirror_{i}" for i in range(1, d + 1)]


def richardson_construction(d, omega, temp, variant="odd+mirror"):
    lay = Layout()
    for name, size in (("a", d), ("e", d), ("b", 1), ("x", 1)):
        lay.add(name, size)
    query, key = np.zeros((d, lay.dim)), np.zeros((d, lay.dim))
    query[:, lay["a"]], key[:, lay["e"]] = np.eye(d), np.eye(d)
    heads = bilinear_heads(lay, query, key, move(lay, "x", "x", -omega), temp, variant, "A x", n_keys=2 * d)
    step = LayerWeights(heads, identity(lay, "b", omega, dst="x"), name="richardson-step")
    w = AlgoFormerWeights(lay, pre=(), loop=(step,), post=(), notes={"algorithm": "richardson", "omega": omega})
    rows = Readout("x", slice(0, d))
    return RichardsonConstruction(w, np.eye(d), answer=rows, iterate=rows, assumptions={"d": d})


def richardson_reference(p, iters, omega, dtype=np.float64):
    A, b, x = (np.asarray(a, dtype) for a in (p.x, p.y[..., 0], p.x_test))
    its = [x]
    for _ in range(iters):
        its.append(its[-1] + dtype(omega) * (b - np.einsum("bij,bj->bi", A, its[-1])))
    return Trajectory(np.stack(its, 1)[..., None], np.stack(its, 1)[..., None])


def draw(rng, o):
    G = rng.standard_normal((o.problems, o.d, o.d))
    A = np.eye(o.d) + G @ G.transpose(0, 2, 1) / o.d                 # symmetric positive definite
    b, x0 = rng.standard_normal((o.problems, o.d, 1)), rng.standard_normal((o.problems, o.d))
    return Regression(A, b, x0, np.linalg.solve(A, b)[..., 0])


def violations(p, o, omega):
    rho = np.abs(np.linalg.eigvals(np.eye(p.x.shape[1]) - omega * p.x)).max(axis=1)
    return np.where(rho >= 1, "spectral radius of I - omega A >= 1: Richardson diverges", "")


ALGORITHM = Algorithm(
    name="richardson", summary="Richardson iteration x <- x + omega (b - A x) for an in-context system (--d)",
    step_name="omega", draw=draw, violations=violations, reference=richardson_reference,
    choose_step=lambda p: float(1.0 / np.linalg.eigvalsh(p.x)[:, -1].max()),
    score_bounds=lambda p, omega: {"loop": float(np.abs(p.x).max())},
    build=lambda o, omega, temps, variant: richardson_construction(o.d, omega, temps["loop"], variant),
    reference_in=richardson_reference, n_tokens=lambda o: 2 * o.d, ignores=("N", "m", "x_bound"),
    supports=lambda variant: is_mirror(variant) and not odd_values(variant))

if __name__ == "__main__":
    from verify import cli, registry
    registry.register(ALGORITHM)
    sys.exit(cli.main(["richardson", *sys.argv[1:]]))
