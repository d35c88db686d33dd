"""The graphs the verifier runs: seeded random graphs, and a small edge-list file format.

Random graphs: G(n, p) (Erdos-Renyi), undirected unless asked, integer weights uniform in
[1, max_weight] (the same weight both ways on an undirected edge). The default p = min(1, 2 ln n / n)
makes most graphs connected, so that the search reaches most nodes.

Graph file (UTF-8 text; '#' starts a comment; blank lines are ignored):

    nodes 5            # first line: the number of nodes
    directed           # optional second line; without it every edge goes both ways
    0 1 4              # one edge per line: u v [weight], nodes 0..n-1, weight an integer >= 0
    1 2                # weight 1 when omitted

Self-loops are refused (no search revisits a node), as are repeated edges, negative or non-integer
weights and nodes outside 0..n-1. Errors are ``GraphFileError`` naming the file, the line and the fault.
"""
from __future__ import annotations

import math

import numpy as np

from constructions.graphs.tokens import Graph


class GraphFileError(ValueError):
    pass


def default_p(n: int) -> float:
    return min(1.0, 2.0 * math.log(max(n, 2)) / n)


def random_graph(n: int, p: float, max_weight: int, rng: np.random.Generator, directed: bool = False) -> Graph:
    adj = (rng.random((n, n)) < p).astype(np.int64)
    np.fill_diagonal(adj, 0)
    weight = rng.integers(1, max_weight + 1, size=(n, n))
    if not directed:
        adj = np.triu(adj, 1); adj = adj + adj.T
        weight = np.triu(weight, 1); weight = weight + weight.T
    return Graph(adj, weight * adj, directed)


def _ints(path: str, lineno: int, fields: list[str]) -> list[int]:
    out = []
    for f in fields:
        try:
            out.append(int(f))
        except ValueError:
            raise GraphFileError(f"graph file {path}, line {lineno}: {f!r} is not an integer") from None
    return out


def read_graph_file(path: str) -> Graph:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise GraphFileError(f"graph file {path}: cannot read it ({e.__class__.__name__}: {e})") from None
    lines = [(i + 1, ln.split("#", 1)[0].split()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, f) for i, f in lines if f]
    if not lines or lines[0][1][0] != "nodes" or len(lines[0][1]) != 2:
        raise GraphFileError(f"graph file {path}: the first line must be 'nodes N'")
    n = _ints(path, lines[0][0], lines[0][1][1:])[0]
    if n < 1:
        raise GraphFileError(f"graph file {path}, line {lines[0][0]}: nodes={n} is invalid: expected an integer >= 1")
    directed = len(lines) > 1 and lines[1][1] == ["directed"]
    adj, weight = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    for lineno, fields in lines[1 + directed:]:
        if len(fields) not in (2, 3):
            raise GraphFileError(f"graph file {path}, line {lineno}: expected 'u v [weight]', got {' '.join(fields)!r}")
        u, v, *w = _ints(path, lineno, fields)
        w = w[0] if w else 1
        for name, x in (("u", u), ("v", v)):
            if not 0 <= x < n:
                raise GraphFileError(f"graph file {path}, line {lineno}: {name}={x} is outside the nodes 0..{n - 1}")
        if u == v:
            raise GraphFileError(f"graph file {path}, line {lineno}: self-loop {u} {v} is not allowed")
        if w < 0:
            raise GraphFileError(f"graph file {path}, line {lineno}: weight={w} is negative: expected an integer >= 0")
        pairs = [(u, v)] if directed else [(u, v), (v, u)]
        if any(adj[a, b] for a, b in pairs):
            raise GraphFileError(f"graph file {path}, line {lineno}: edge {u} {v} is given twice")
        for a, b in pairs:
            adj[a, b], weight[a, b] = 1, w
    return Graph(adj, weight, directed)
