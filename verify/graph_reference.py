"""Plain-Python BFS, DFS and Dijkstra that record the state after every iteration.

Each is the textbook algorithm, written independently of the transformer's selection rule (which
``constructions/graphs/search.py`` derives): BFS with a FIFO queue, DFS by recursion (neighbours in
index order), Dijkstra with a heap of (distance, node), so ties go to the smaller index. One iteration
visits one node. The recorded state (``SearchState``) also names the key the transformer orders by:
BFS, the iteration at which v's parent was visited; DFS, the iteration at which the latest visited
in-neighbour of v was visited; Dijkstra, the distance.

``reference(rule, graph, source)`` returns [initial state, state after iteration 1, ...]; the last one
has term = True (no reached node is left unvisited).
"""
from __future__ import annotations

import heapq
from collections import deque

from constructions.graphs.tokens import Graph, SearchState


class _Trace:
    def __init__(self, g: Graph, source: int) -> None:
        n = g.n
        self.g, self.visited, self.reached = g, [False] * n, [False] * n
        self.key, self.dist, self.parent = [0] * n, [0] * n, [0] * n
        self.reached[source], self.parent[source] = True, source
        self.clock = 0
        self.states = [self.snapshot(None)]

    def snapshot(self, chosen: int | None) -> SearchState:
        term = not any(r and not v for r, v in zip(self.reached, self.visited))
        return SearchState(tuple(self.visited), tuple(self.reached), tuple(self.key), tuple(self.dist),
                           tuple(self.parent), self.clock, term, chosen)

    def visit(self, u: int) -> None:
        if self.visited[u] or not self.reached[u]:
            raise AssertionError(f"reference visits node {u} twice or before reaching it")
        self.visited[u] = True

    def record(self, u: int) -> None:
        self.clock += 1
        self.states.append(self.snapshot(u))

    def set(self, v: int, key: int, dist: int, parent: int) -> None:
        self.reached[v], self.key[v], self.dist[v], self.parent[v] = True, key, dist, parent


def bfs(g: Graph, source: int) -> list[SearchState]:
    t, queue = _Trace(g, source), deque([source])
    while queue:
        u = queue.popleft()
        t.visit(u)
        for v in g.out_neighbours(u):
            if not t.reached[v]:
                t.set(v, t.clock, t.dist[u] + 1, u)
                queue.append(v)
        t.record(u)
    return t.states


def dfs(g: Graph, source: int) -> list[SearchState]:
    """Recursive DFS (an explicit stack of neighbour iterators, so deep graphs do not hit Python's
    recursion limit). At each visit the unvisited out-neighbours record the visitor as parent."""
    t = _Trace(g, source)

    def enter(u: int, parent: int, depth: int) -> None:
        t.dist[u], t.parent[u] = depth, parent          # the recursion's parent and depth
        t.visit(u)
        for v in g.out_neighbours(u):
            if not t.visited[v]:
                t.set(v, t.clock, depth + 1, u)
        t.record(u)

    enter(source, source, 0)
    stack = [(source, iter(g.out_neighbours(source)))]
    while stack:
        u, it = stack[-1]
        for v in it:
            if not t.visited[v]:
                enter(v, u, t.dist[u] + 1)
                stack.append((v, iter(g.out_neighbours(v))))
                break
        else:
            stack.pop()
    return t.states


def dijkstra(g: Graph, source: int) -> list[SearchState]:
    t, heap = _Trace(g, source), [(0, source)]
    while heap:
        du, u = heapq.heappop(heap)
        if t.visited[u] or du != t.dist[u]:
            continue                                     # a stale entry
        t.visit(u)
        for v in g.out_neighbours(u):
            cand = du + int(g.weight[u, v])
            if not t.visited[v] and (not t.reached[v] or cand < t.dist[v]):
                t.set(v, cand, cand, u)
                heapq.heappush(heap, (cand, v))
        t.record(u)
    return t.states


REFERENCES = {"bfs": bfs, "dfs": dfs, "dijkstra": dijkstra}


def reference(rule: str, g: Graph, source: int) -> list[SearchState]:
    if not 0 <= source < g.n:
        raise ValueError(f"source={source!r} is invalid: expected a node in [0, {g.n - 1}]")
    return REFERENCES[rule](g, source)
