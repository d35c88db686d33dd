"""Prompt encoders and read-outs: (X, y, x_test) -> token matrix, and where the answer lies.

The encoder prompt of Lemmas A.2 / A.4 (n = 2N + 2 tokens, as rows):

    token   2i      2i+1     2N       2N+1
            x_i     y_i      x_test   sink / answer slot
    x       x_i     0        x_test   0
    y       0       y_i      0        0
    pos     P_i     P_i      P_N      P_N        (Lemma A.1 sign vectors: x_i and y_i share one)
    is_x    1       0        0        0
    is_y    0       1        0        0
    is_test 0       0        1        0
    is_sink 0       0        0        1
    one     1       1        1        1          (the constant row that meets the sink's key C)

Every other register of a construction's layout starts at zero and is filled by its pre-transformer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layout import Layout
from .weights import AlgoFormerWeights

INDICATORS = ("is_x", "is_y", "is_test", "is_sink", "one")


def regression_layout(d: int, m: int, pos_dim: int) -> Layout:
    lay = Layout()
    lay.add("x", d)
    lay.add("y", m)
    lay.add("pos", pos_dim)
    for name in INDICATORS:
        lay.add(name, 1)
    return lay


def encode_regression(layout: Layout, P: np.ndarray, x: np.ndarray, y: np.ndarray,
                      x_test: np.ndarray) -> np.ndarray:
    """x (B, N, d), y (B, N, m), x_test (B, d) -> tokens (B, 2N + 2, D), float64."""
    x, y, x_test = np.asarray(x, float), np.asarray(y, float), np.asarray(x_test, float)
    if x.ndim != 3 or y.ndim != 3 or x_test.ndim != 2:
        raise ValueError(f"expected x (B, N, d), y (B, N, m), x_test (B, d); got shapes "
                         f"{x.shape}, {y.shape}, {x_test.shape}")
    B, N, d = x.shape
    if y.shape[:2] != (B, N) or x_test.shape != (B, d):
        raise ValueError(f"shapes disagree: x {x.shape}, y {y.shape}, x_test {x_test.shape}")
    if d != layout.size("x") or y.shape[2] != layout.size("y"):
        raise ValueError(f"data of dimension d={d}, m={y.shape[2]} does not fit the layout "
                         f"(d={layout.size('x')}, m={layout.size('y')})")
    if P.shape[0] < N + 1:
        raise ValueError(f"N={N} samples but the construction has embeddings for {P.shape[0] - 1}")
    h = np.zeros((B, 2 * N + 2, layout.dim))
    h[:, 0:2 * N:2, layout["x"]] = x
    h[:, 1:2 * N:2, layout["y"]] = y
    h[:, 2 * N, layout["x"]] = x_test
    pos = np.repeat(P[:N + 1].astype(float), 2, axis=0)          # (2N + 2, m): pairs share p_i
    h[:, :, layout["pos"]] = pos
    h[:, 0:2 * N:2, layout.row("is_x")] = 1.0
    h[:, 1:2 * N:2, layout.row("is_y")] = 1.0
    h[:, 2 * N, layout.row("is_test")] = 1.0
    h[:, 2 * N + 1, layout.row("is_sink")] = 1.0
    h[:, :, layout.row("one")] = 1.0
    return h


@dataclass(frozen=True)
class Readout:
    """Rows ``register`` of the tokens ``tokens`` (a slice or index list over the n tokens)."""
    register: str
    tokens: slice | int

    def read(self, layout: Layout, h):
        """h (B, n, D) numpy or torch -> (B, [n_sel,] size)."""
        return h[:, self.tokens, layout[self.register]]


@dataclass(frozen=True)
class Construction:
    """Weights plus how to feed them and where to read: what ``verify`` and the notebooks need."""
    weights: AlgoFormerWeights
    pos: np.ndarray                 # (N + 1, m) Lemma A.1 sign vectors used by the encoder
    answer: Readout                 # the prediction after TF_post
    iterate: Readout                # the algorithm's state after each loop (read from loop states)
    assumptions: dict = field(default_factory=dict)   # what the weights assume about the data

    @property
    def layout(self) -> Layout:
        return self.weights.layout

    def token_roles(self) -> list[str]:
        """The role of every token ``encode`` writes, in order (plots, export): here the regression
        prompt's x_1, y_1, ..., x_N, y_N, x_test, sink. A subclass with its own prompt overrides
        both this and ``encode``."""
        N = self.pos.shape[0] - 1
        return [f"{k}_{i}" for i in range(1, N + 1) for k in ("x", "y")] + ["x_test", "sink"]

    def encode(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        """(x, y, x_test) -> tokens (B, n, D), float64: the prompt encoder (override for another prompt)."""
        N = np.asarray(x).shape[1]
        if N != self.assumptions.get("N", N):
            raise ValueError(f"N={N} samples, but the construction was built for N={self.assumptions['N']}")
        return encode_regression(self.layout, self.pos, x, y, x_test)
