"""A feed-forward network written one ReLU unit at a time, on named rows.

    ffn = Units(lay)
    ffn.add({"d": 1, "du": -1}, bias=-5, out={"d": -1, "imp": 1})   # relu(d - du - 5) into two rows
    weights = ffn.build()

Each unit is relu(sum_row coef * h[row] + bias), added to the output rows with the given coefficients
(Eq. 1's FFN is residual: the network's output is added to the token). Rows are named as in the
layout; a register of several rows is addressed as ("pos", j). ``clear(reg)`` adds the exact
identity pair relu(x) - relu(-x) with coefficient -1, which zeroes a register in place.
"""
from __future__ import annotations

import numpy as np

from ..layout import Layout
from ..weights import FFNWeights

Row = str | tuple[str, int]


class Units:
    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        self._w1: list[np.ndarray] = []
        self._b1: list[float] = []
        self._w2: list[np.ndarray] = []
        self.b2 = np.zeros(lay.dim)

    def _index(self, row: Row) -> int:
        if isinstance(row, tuple):
            name, j = row
            block = self.lay[name]
            if not 0 <= j < block.stop - block.start:
                raise ValueError(f"row {j} is outside register {name!r} ({block.stop - block.start} rows)")
            return block.start + j
        return self.lay.row(row)

    def add(self, terms: dict[Row, float], bias: float, out: dict[Row, float]) -> None:
        w1, w2 = np.zeros(self.lay.dim), np.zeros(self.lay.dim)
        for row, coef in terms.items():
            w1[self._index(row)] += coef
        for row, coef in out.items():
            w2[self._index(row)] += coef
        self._w1.append(w1); self._b1.append(float(bias)); self._w2.append(w2)

    def clear(self, name: str) -> None:
        """reg <- 0 exactly: the unit pair relu(x), relu(-x) feeds -x back into every row of reg."""
        for j in range(self.lay.size(name)):
            row = (name, j)
            self.add({row: 1.0}, 0.0, {row: -1.0})
            self.add({row: -1.0}, 0.0, {row: 1.0})

    def round01(self, src: Row, dst: Row) -> None:
        """dst += 1 where src is in [3/4, 5/4], 0 where src is in [-1/4, 1/4]: relu(2x - 1/2) - relu(2x - 3/2).

        Exact in any binary floating-point format: 2x is exact, and for x in those ranges both
        2x - 1/2 and 2x - 3/2 are representable (they are multiples of ulp(2x) no larger than 2x),
        so the two units are exact and their difference, 1 or 0, is too."""
        self.add({src: 2.0}, -0.5, {dst: 1.0})
        self.add({src: 2.0}, -1.5, {dst: -1.0})

    def build(self) -> FFNWeights:
        if not self._w1:
            raise ValueError("an FFN needs at least one unit")
        return FFNWeights(np.stack(self._w1), np.array(self._b1), np.stack(self._w2, axis=1), self.b2.copy())
