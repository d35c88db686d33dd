"""The residual-stream layout: every row of a token has a name.

A ``Layout`` hands each named register a contiguous block of rows, in insertion order (as ALTA
does). Constructions say which named rows each weight reads and writes, never raw indices:

    lay = Layout(); lay.add("x", d); lay.add("Mx", d); lay.add("sink", 1)
    query[:, lay["Mx"]] = ...          # the rows named as in Lemma A.4

Duplicate names and empty blocks are errors. ``labels()`` names every row for plots ("x[3]").
"""
from __future__ import annotations


class Layout:
    def __init__(self) -> None:
        self._blocks: dict[str, slice] = {}
        self.dim = 0

    def add(self, name: str, size: int) -> slice:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name={name!r} is invalid: expected a non-empty string")
        if name in self._blocks:
            raise ValueError(f"name={name!r} is already in the layout: register names must be unique")
        if not (isinstance(size, int) and size >= 1):
            raise ValueError(f"size={size!r} for {name!r} is invalid: expected an integer >= 1")
        block = slice(self.dim, self.dim + size)
        self._blocks[name] = block
        self.dim += size
        return block

    def __getitem__(self, name: str) -> slice:
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no register {name!r} in the layout; registers: {list(self._blocks)}") from None

    def row(self, name: str) -> int:
        """The single row of a one-row register (indicators, the constant row)."""
        block = self[name]
        if block.stop - block.start != 1:
            raise ValueError(f"register {name!r} has {block.stop - block.start} rows, expected 1")
        return block.start

    def __contains__(self, name: str) -> bool:
        return name in self._blocks

    def __iter__(self):
        return iter(self._blocks.items())

    @property
    def names(self) -> list[str]:
        return list(self._blocks)

    def size(self, name: str) -> int:
        block = self[name]
        return block.stop - block.start

    def labels(self) -> list[str]:
        out = []
        for name, block in self._blocks.items():
            n = block.stop - block.start
            out += [name] if n == 1 else [f"{name}[{i}]" for i in range(n)]
        return out

    def to_json(self) -> dict:
        return {"dim": self.dim, "blocks": {k: [v.start, v.stop] for k, v in self._blocks.items()}}

    def __repr__(self) -> str:
        return "Layout(" + ", ".join(f"{k}:{v.start}-{v.stop}" for k, v in self._blocks.items()) + ")"
