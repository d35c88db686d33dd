"""Graphs, search states, and the tokens that hold them (the input of the graph AlgoFormers).

A ``Graph`` is n nodes, a 0/1 adjacency ``adj[u, v]`` (edge u -> v) and integer weights ``weight[u, v]``
(0 where there is no edge). A ``SearchState`` is what one iteration of BFS, DFS or Dijkstra leaves:
the visited and reached sets, the key that orders the selection, the distance (BFS level, DFS tree
depth, Dijkstra distance), the parent, the loop clock and the termination flag.

Tokens: one per node (token v, v = 0..n-1) and one sink (token n), as rows (n + 1, D). Token v holds
its *incoming* edges: ``A[j] = adj[j, v]`` and ``W[j] = weight[j, v]``; that is how the adjacency
enters the residual stream (``search.py`` says why and what it costs). ``encode`` writes a state into
tokens, every scratch register 0; ``decode`` reads one back. The verifier compares the model's tokens
after every loop with ``encode(reference state)`` entry by entry, so scratch residue is caught too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import Layout


@dataclass(frozen=True)
class Graph:
    adj: np.ndarray      # (n, n) 0/1, adj[u, v] = 1 for an edge u -> v; no self-loops
    weight: np.ndarray   # (n, n) integers >= 0, 0 where adj is 0
    directed: bool = True

    def __post_init__(self) -> None:
        n = self.adj.shape[0]
        if self.adj.shape != (n, n) or self.weight.shape != (n, n):
            raise ValueError(f"adj {self.adj.shape} and weight {self.weight.shape} must both be (n, n)")
        if n < 1:
            raise ValueError("n=0 is invalid: a graph needs at least one node")
        if not np.isin(self.adj, (0, 1)).all():
            raise ValueError("adj is invalid: expected entries 0 or 1")
        if np.any(np.diag(self.adj)):
            raise ValueError("adj has self-loops: drop them first (no search visits a node twice)")
        if np.any(self.weight < 0):
            u, v = np.argwhere(self.weight < 0)[0]
            raise ValueError(f"weight[{u}, {v}]={self.weight[u, v]} is invalid: expected an integer >= 0")
        if np.any(self.weight != np.round(self.weight)) or np.any((self.adj == 0) & (self.weight != 0)):
            raise ValueError("weight is invalid: expected integers, and 0 wherever there is no edge")

    @property
    def n(self) -> int:
        return self.adj.shape[0]

    @property
    def max_weight(self) -> int:
        return int(self.weight.max(initial=0))

    def out_neighbours(self, u: int) -> list[int]:
        return [int(v) for v in np.flatnonzero(self.adj[u])]


@dataclass(frozen=True)
class SearchState:
    visited: tuple[bool, ...]
    reached: tuple[bool, ...]
    key: tuple[int, ...]       # what the selection orders by (0 where not reached)
    dist: tuple[int, ...]      # level / depth / distance (0 where not reached)
    parent: tuple[int, ...]    # the parent's index (0 where not reached; the source is its own parent)
    clock: int                 # iterations done
    term: bool                 # no reached node is left unvisited
    chosen: int | None = None  # the node this iteration visited (None for the initial state)

    def frontier(self) -> tuple[int, ...]:
        return tuple(v for v, (r, s) in enumerate(zip(self.reached, self.visited)) if r and not s)


def state_registers(lay: Layout) -> list[str]:
    return [name for name in ("r", "vis", "inact", "k", "d", "p", "clock", "term") if name in lay]


def encode(lay: Layout, g: Graph, s: SearchState) -> np.ndarray:
    """The tokens (n + 1, D) float64 that hold graph g in state s, every scratch register 0."""
    n = g.n
    h = np.zeros((n + 1, lay.dim))
    h[:, lay.row("one")] = 1.0
    h[:n, lay.row("node")] = 1.0
    h[n, lay.row("sink")] = 1.0
    h[:n, lay.row("idx")] = np.arange(n)
    h[:n, lay["pos"]] = np.eye(n)
    h[:n, lay["A"]] = g.adj.T                      # token v, row j: the edge j -> v
    if "W" in lay:
        h[:n, lay["W"]] = g.weight.T
    r, vis = np.array(s.reached, float), np.array(s.visited, float)
    h[:n, lay.row("r")] = r
    h[:n, lay.row("vis")] = vis
    h[:n, lay.row("inact")] = 1.0 - r + vis
    if "k" in lay:
        h[:n, lay.row("k")] = s.key
    h[:n, lay.row("d")] = s.dist
    h[:n, lay.row("p")] = s.parent
    h[:, lay.row("clock")] = s.clock
    h[:, lay.row("term")] = float(s.term)
    return h


def decode(lay: Layout, h: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The state registers of the node tokens, as float64 arrays (no rounding: the verifier wants
    to see exactly what the model holds)."""
    h = np.asarray(h, dtype=np.float64)
    return {name: h[:n, lay.row(name)] for name in state_registers(lay)}


def first_mismatch(lay: Layout, got: np.ndarray, want: np.ndarray) -> str | None:
    """None if the two token matrices are equal entry by entry, else 'token T, row LABEL: got X,
    expected Y' for the first difference (node tokens first, then the sink)."""
    got = np.asarray(got, dtype=np.float64)
    diff = np.argwhere(~(got == want))
    if len(diff) == 0:
        return None
    t, c = diff[0]
    label = lay.labels()[c]
    return f"token {t}, row {label}: got {float(got[t, c])!r}, expected {float(want[t, c])!r} ({len(diff)} entries differ)"
