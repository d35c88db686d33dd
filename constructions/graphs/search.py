"""BFS, DFS and Dijkstra as looped transformers: one loop = one iteration of the search.

After de Luca and Fountoulakis 2024 ("Simulation of Graph Algorithms with Looped Transformers",
ICML, arXiv 2402.01107), redesigned for our Eq. 1 model. All three searches are one scheme:

    repeat: u <- the reached, unvisited node with the best key (ties: smallest index)
            visit u; for every edge u -> v with v not visited: maybe update v (the rule below)
    until no reached node is unvisited (the termination flag)

    rule       key of v                                   update of v from u (edge u -> v, v unvisited)
    dijkstra   d[v], minimised                            if v unreached or d[u] + w < d[v]: d, p <- d[u] + w, u
    bfs        the clock when v's parent was visited, min  if v unreached: k, d, p <- clock, d[u] + 1, u
    dfs        the clock when v's latest visited in-       always: k, d, p <- clock, d[u] + 1, u
               neighbour was visited, maximised

BFS: the FIFO queue holds nodes in the order (parent's visit time, index), which is this key with its
tie-break. DFS (recursive, neighbours in index order): the most recently visited node that still has
an unreached neighbour is the deepest such node on the recursion stack (every later-visited node is
finished), so the next node visited is, among the nodes reached and not visited, the one with the
latest visitor, smallest index first. The verifier checks both claims against plain recursive DFS and
queue BFS, step by step.

Layout (tokens: node v = 0..n-1, then the sink; ``tokens.py`` writes them)

    one, node, sink, idx       1 everywhere; 1 on nodes; 1 on the sink; v on node v
    pos[n], A[n], W[n]         one-hot v; incoming adjacency A[j] = [j -> v]; weights W[j] (dijkstra only)
    r, vis, inact              reached; visited; inact = 1 - r + vis (on nodes; 0 on the sink)
    k, d, p, clock, term       key (bfs/dfs; dijkstra's key is d); distance; parent; iterations; halt
    sel[n], du, found          scratch: what the select head reads (approximate)
    selc[n], foundc            scratch: the same rounded to exact 0/1
    wu, eu, isu, uidx, imp, fn scratch: w(u -> v) (dijkstra only), [u -> v], [v = u], u, [v was updated], any active left

TF_loop, 4 layers, 2 heads (lam: the inverse temperature, the scale of every score):
 L1 head "select": query one, key lam (s k - idx / n) - lam K inact - (lam K / 2) sink, s = -1 (min) or
    +1 (dfs: max); values sel <- pos, du <- d, found <- node. Every query is the constant row, so every
    token reads the same: the active node's keys differ by at least lam / n (integer keys, ties broken by
    idx / n), inactive nodes score at least lam below the sink and the sink at least lam below any active
    node (K = 2 (kmax + 2), kmax the bound on keys). So the weight off u is at most n e^{-lam/n} and
    sel = e_u, du = d[u], found = 1 up to that; with no active node the sink takes it and found = 0.
    FFN: selc, foundc <- round01(sel, found), exact while the leak is under 1/4; sel, found <- 0.
 L2 FFN: wu = sum_j relu(W[j] + M selc[j] - M) = w(u -> v); eu = sum_j relu(A[j] + selc[j] - 1) = [u -> v];
    isu = sum_j relu(pos[j] + selc[j] - 1); uidx = sum_j j relu(selc[j]); selc <- 0. All exact (integers).
 L3 FFN: the rule's update, each product with a 0/1 flag written as a gated unit relu(x - B (1 - flag)),
    exact for |x| < B = kmax + 1; r += relu(eu - r), vis += isu, inact follows both, clock += foundc,
    imp = [v was updated]; du, wu, eu, isu, foundc <- 0. Dijkstra's [cand < d] on integers is
    relu(d - cand) - relu(d - cand - 1), and d - relu(d - cand) = min(d, cand).
 L4 head "any": query one, key lam (r - vis) + (lam / 2) sink, value fn <- node: 1 if a node is still
    active, else 0 (weight leak n e^{-lam/2}). FFN: p += imp (uidx - p) (gated, exact); term <- 1 -
    round01(fn); imp, uidx, fn <- 0.

What is exact and what is not: every flag and one-hot is re-rounded by an FFN, and every integer is
moved by exact ReLU arithmetic, *except* du = d[u]: it is a softmax average and is exact only when the
weights off u are below half an ulp of du (they underflow, or are absorbed). That, and the resolution of
the scores (the winner's score is about lam kmax, and must be resolved to lam / n, so n kmax must stay
well under 2^p for p mantissa bits), are where finite precision ends the construction. The paper proves
such a limit exists; ``benchmarks/graph_precision.py`` measures it, and docs/graph-algorithms.md
derives the four limits (selection leak, distance leak, score resolution, integer gates) that the
measured tables follow.

Where and why this differs from the paper
- The adjacency is in the tokens (A, W: 2n rows), not in extra heads that multiply by A. Our model is
  Eq. 1 and takes only tokens; the paper's heads need A as a second input of every layer. Cost: width
  4n + 20 (bfs, dfs) or 5n + 20 (dijkstra) instead of the paper's constant width, so one weight set
  serves one n. The n x n adjacency is input either way.
- One softmax over all nodes selects the next node in one layer (one-hot positions, n rows), instead of
  the paper's scan that compares one node per loop with angular positional encodings (eps = 1e-2, so
  at most 2 pi / eps ~ 628 nodes): our loop is one algorithm iteration, 4 layers and 2 heads, against
  their 20 blocks of 5 heads (BFS, Dijkstra) per step of the scan.
- A reached flag instead of INF = 1e4 for unreached distances, and an inact register so that the large
  offset K meets only inactive nodes' scores (the winner's score stays of size lam kmax).
- FFNs are one hidden ReLU layer with biases (Eq. 1), not four bias-free linear maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..layout import Layout
from ..weights import AlgoFormerWeights, HeadWeights, LayerWeights
from .units import Units

Rule = Literal["bfs", "dfs", "dijkstra"]
RULES: tuple[str, ...] = ("bfs", "dfs", "dijkstra")


@dataclass(frozen=True)
class SearchSpec:
    rule: Rule
    n: int                 # nodes: the weights serve graphs of exactly n nodes
    lam: float             # inverse temperature: every score is lam times an O(kmax) quantity
    max_weight: int = 1    # dijkstra: the largest edge weight the gates allow (M)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r} is invalid: expected one of {', '.join(RULES)}")
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"n={self.n!r} is invalid: expected an integer >= 1")
        if not (self.lam > 0 and np.isfinite(self.lam)):
            raise ValueError(f"lam={self.lam!r} is invalid: expected a positive finite float")
        if not (isinstance(self.max_weight, int) and self.max_weight >= 1):
            raise ValueError(f"max_weight={self.max_weight!r} is invalid: expected an integer >= 1")

    @property
    def kmax(self) -> int:
        """A bound on every key, distance and candidate: n w_max (dijkstra), n (bfs, dfs)."""
        return self.n * self.max_weight if self.rule == "dijkstra" else self.n

    @property
    def key(self) -> str:
        return "d" if self.rule == "dijkstra" else "k"


def search_layout(spec: SearchSpec) -> Layout:
    n, lay = spec.n, Layout()
    for name in ("one", "node", "sink", "idx"):
        lay.add(name, 1)
    lay.add("pos", n); lay.add("A", n)
    if spec.rule == "dijkstra":
        lay.add("W", n)
    for name in ("r", "vis", "inact") + (("k",) if spec.rule != "dijkstra" else ()) + ("d", "p", "clock", "term"):
        lay.add(name, 1)
    lay.add("sel", n); lay.add("du", 1); lay.add("found", 1)
    lay.add("selc", n); lay.add("foundc", 1)
    for name in (("wu",) if spec.rule == "dijkstra" else ()) + ("eu", "isu", "uidx", "imp", "fn"):
        lay.add(name, 1)
    return lay


def _head(lay: Layout, key: dict[str, float], value: dict[tuple[str, str], float], name: str) -> HeadWeights:
    q, k, v = np.zeros((1, lay.dim)), np.zeros((1, lay.dim)), np.zeros((lay.dim, lay.dim))
    q[0, lay.row("one")] = 1.0
    for row, coef in key.items():
        k[0, lay.row(row)] = coef
    for (dst, src), coef in value.items():
        v[lay[dst], lay[src]] = coef * np.eye(lay.size(src))
    return HeadWeights(q, k, v, name=name)


def select_layer(spec: SearchSpec, lay: Layout) -> LayerWeights:
    """L1: the select head and the rounding FFN."""
    lam, K, s = spec.lam, 2.0 * (spec.kmax + 2), (1.0 if spec.rule == "dfs" else -1.0)
    head = _head(lay, {spec.key: s * lam, "idx": -lam / spec.n, "inact": -lam * K, "sink": -lam * K / 2},
                 {("sel", "pos"): 1.0, ("du", "d"): 1.0, ("found", "node"): 1.0}, "select")
    ffn = Units(lay)
    for j in range(spec.n):
        ffn.round01(("sel", j), ("selc", j))
    ffn.round01("found", "foundc")
    ffn.clear("sel"); ffn.clear("found")
    return LayerWeights((head,), ffn.build(), name="select")


def gather_layer(spec: SearchSpec, lay: Layout) -> LayerWeights:
    """L2: what each token needs about u, read through the exact one-hot selc."""
    ffn, M = Units(lay), float(spec.max_weight)
    for j in range(spec.n):
        sj = ("selc", j)
        if "W" in lay:
            ffn.add({("W", j): 1.0, sj: M}, -M, {"wu": 1.0})
        ffn.add({("A", j): 1.0, sj: 1.0}, -1.0, {"eu": 1.0})
        ffn.add({("pos", j): 1.0, sj: 1.0}, -1.0, {"isu": 1.0})
        ffn.add({sj: 1.0}, 0.0, {"uidx": float(j), sj: -1.0})   # selc >= 0: relu(selc) = selc
    return LayerWeights((), ffn.build(), name="gather")


def update_layer(spec: SearchSpec, lay: Layout) -> LayerWeights:
    """L3: the rule's update; visit u; the clock; clear the scratch of L1-L2."""
    ffn, B = Units(lay), float(spec.kmax + 1)
    off_edge = {"eu": B}                       # with bias -B: -B (1 - eu)
    if spec.rule == "dijkstra":
        cand = {"du": 1.0, "wu": 1.0}
        ffn.add({**cand, **off_edge, "r": -B}, -B, {"d": 1.0})              # unreached: d <- cand
        gap = {"d": 1.0, "du": -1.0, "wu": -1.0, **off_edge, "vis": -B, "r": B}
        ffn.add(gap, -2 * B, {"d": -1.0, "imp": 1.0})                       # d <- min(d, cand)
        ffn.add(gap, -2 * B - 1, {"imp": -1.0})                             # imp: [cand < d]
        ffn.add({"eu": 1.0, "r": -1.0}, 0.0, {"imp": 1.0, "r": 1.0, "inact": -1.0})
    elif spec.rule == "bfs":
        ffn.add({"clock": 1.0, **off_edge, "r": -B}, -B, {"k": 1.0})
        ffn.add({"du": 1.0, **off_edge, "r": -B}, 1.0 - B, {"d": 1.0})
        ffn.add({"eu": 1.0, "r": -1.0}, 0.0, {"imp": 1.0, "r": 1.0, "inact": -1.0})
    else:  # dfs: every unvisited out-neighbour of u takes u as its latest visitor
        gate = {**off_edge, "vis": -B}
        ffn.add({"clock": 1.0, "k": -1.0, **gate}, -B, {"k": 1.0})
        ffn.add({"clock": -1.0, "k": 1.0, **gate}, -B, {"k": -1.0})
        ffn.add({"du": 1.0, "d": -1.0, **gate}, 1.0 - B, {"d": 1.0})
        ffn.add({"du": -1.0, "d": 1.0, **gate}, -1.0 - B, {"d": -1.0})
        ffn.add({"eu": 1.0, "vis": -1.0}, 0.0, {"imp": 1.0})
        ffn.add({"eu": 1.0, "r": -1.0}, 0.0, {"r": 1.0, "inact": -1.0})
    ffn.add({"isu": 1.0}, 0.0, {"vis": 1.0, "inact": 1.0})
    ffn.add({"foundc": 1.0}, 0.0, {"clock": 1.0})
    for name in ("du", "wu", "eu", "isu", "foundc"):
        if name in lay:
            ffn.clear(name)
    return LayerWeights((), ffn.build(), name="update")


def finish_layer(spec: SearchSpec, lay: Layout) -> LayerWeights:
    """L4: the any-active head, the parent update and the termination flag."""
    lam, Bp = spec.lam, float(spec.n)
    head = _head(lay, {"r": lam, "vis": -lam, "sink": lam / 2}, {("fn", "node"): 1.0}, "any")
    ffn = Units(lay)
    ffn.add({"uidx": 1.0, "p": -1.0, "imp": Bp}, -Bp, {"p": 1.0})          # p <- uidx where imp = 1
    ffn.add({"uidx": -1.0, "p": 1.0, "imp": Bp}, -Bp, {"p": -1.0})
    ffn.add({"term": 1.0}, 0.0, {"term": -1.0})                            # term <- 1 - round01(fn)
    ffn.b2[lay.row("term")] = 1.0
    ffn.add({"fn": 2.0}, -0.5, {"term": -1.0})
    ffn.add({"fn": 2.0}, -1.5, {"term": 1.0})
    for name in ("imp", "uidx", "fn"):
        ffn.clear(name)
    return LayerWeights((head,), ffn.build(), name="finish")


def search_weights(spec: SearchSpec) -> AlgoFormerWeights:
    """The looped transformer of the search: no TF_pre, no TF_post, TF_loop = L1..L4."""
    lay = search_layout(spec)
    loop = (select_layer(spec, lay), gather_layer(spec, lay), update_layer(spec, lay), finish_layer(spec, lay))
    return AlgoFormerWeights(lay, (), loop, (), notes={"rule": spec.rule, "n": spec.n, "lam": spec.lam,
                                                        "max_weight": spec.max_weight, "kmax": spec.kmax})
