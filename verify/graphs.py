"""``python -m verify bfs|dfs|dijkstra``: run the graph-search AlgoFormers loop by loop against the
plain-Python searches, comparing every token after every loop, and halting on the model's own flag.

For every dtype, inverse temperature lam, size n (and, for dijkstra, weight bound) the verifier builds
the weights (``constructions.graphs``), runs seeded random graphs (or one graph file), and after loop t
compares the model's tokens with ``encode(reference state t)`` *exactly*: the visited and reached sets,
keys, distances, parents, clock, termination flag, and every scratch register (which must be back to
0). The loop is driven here, one ``run_loop`` at a time, and stops when the model's term row reads 1
(or after n + 1 loops, which is reported as not halting). A row is exact when every loop of every graph
is. Exit status: 0 if every row is exact, 1 if some row is not, 2 on bad arguments or a bad graph file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from constructions.bridge import build_model
from constructions.graphs import RULES, SearchSpec, encode, first_mismatch, search_weights
from constructions.graphs.tokens import Graph
from constructions.layout import Layout

from .graph_inputs import GraphFileError, default_p, random_graph, read_graph_file
from .graph_reference import reference
from .interface import Command
from .options import _int_in

BATCH = 64   # graphs per forward pass
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class GraphRun:
    exact: bool
    loops: int            # loops the model ran
    failure: str | None   # where it first differed (None when exact)


def emulate_batch(model, lay: Layout, rule: str, graphs: list[tuple[Graph, int]], dtype: torch.dtype,
                  device: str = "cpu") -> list[GraphRun]:
    """Run the model on a batch of graphs of one size (each with its source) one loop at a time, and
    compare every graph's tokens with its reference state after every loop.

    The loop stops when every graph's term row reads 1, or after n + 1 loops. A graph halts at the
    first loop whose term row reads 1; that must be the loop after which its search ended. Graphs that
    halted keep running with the batch, and must stay exactly at their final state (a halted search is
    a fixed point of the loop: no node is active, so nothing is selected and nothing changes)."""
    n = graphs[0][0].n
    states = [reference(rule, g, s) for g, s in graphs]
    x = np.stack([encode(lay, g, st[0]) for (g, _), st in zip(graphs, states)])
    h = model.run_pre(model.embed(torch.tensor(x, dtype=dtype, device=device)))      # (B, n+1, D)
    term, halted, failure = lay.row("term"), [None] * len(graphs), [None] * len(graphs)
    with torch.no_grad():
        for t in range(1, n + 2):
            h = model.run_loop(h, t)
            got = h.to(torch.float64).cpu().numpy()
            for b, ((g, _), st) in enumerate(zip(graphs, states)):
                if failure[b] is not None:
                    continue
                if not np.isfinite(got[b]).all():
                    failure[b] = f"loop {t}: non-finite values in the tokens"
                    continue
                if halted[b] is None and t >= len(st):
                    failure[b] = f"loop {t}: the model did not halt when the search ended (loop {len(st) - 1})"
                    continue
                miss = first_mismatch(lay, got[b], encode(lay, g, st[min(t, len(st) - 1)]))
                if miss:
                    after = " after halting" if halted[b] is not None else f" (visiting {st[t].chosen})"
                    failure[b] = f"loop {t}{after}: {miss}"
                elif halted[b] is None and got[b, 0, term] >= 0.5:
                    halted[b] = t
            if all(hb is not None or f is not None for hb, f in zip(halted, failure)):
                break
    return [GraphRun(f is None and hb is not None, hb or t, f or (None if hb else f"no halt after {t} loops"))
            for hb, f in zip(halted, failure)]


def emulate(model, lay: Layout, rule: str, g: Graph, source: int, dtype: torch.dtype,
            device: str = "cpu") -> GraphRun:
    """One graph: ``emulate_batch`` of one."""
    return emulate_batch(model, lay, rule, [(g, source)], dtype, device)[0]


# -- arguments ---------------------------------------------------------------------------------------
def _list(kind, lo, hi, what):
    def parse(s: str):
        try:
            vals = [kind(v) for v in s.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {what} in [{lo}, {hi}], got {s!r}") from None
        if not vals or any(not (lo <= v <= hi) for v in vals):
            raise argparse.ArgumentTypeError(f"expected a comma list of {what} in [{lo}, {hi}], got {s!r}")
        return vals
    return parse




def _dtype_list(s: str) -> list[str]:
    names = [v.strip() for v in s.split(",")]
    if any(v not in DTYPES for v in names):
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(DTYPES)}, got {s!r}")
    return list(dict.fromkeys(names))


def _probability(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1], got {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1], got {s!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_list(int, 1, 2048, "integers"), default=[4, 8, 16],
                   help="graph sizes (nodes), comma list (default 4,8,16)")
    p.add_argument("--graphs", type=_int_in(1, 100_000), default=20,
                   help="random graphs per size (default 20)")
    p.add_argument("--max-weight", type=_list(int, 1, 2**40, "integers"), default=[10],
                   help="dijkstra: weight bounds, comma list; weights uniform in [1, bound] (default 10)")
    p.add_argument("--p", type=_probability, default=None, help="edge probability (default min(1, 2 ln n / n))")
    p.add_argument("--directed", action="store_true", help="random directed graphs (default undirected)")
    p.add_argument("--lam", type=_list(float, 1e-300, 1e300, "floats"), default=[1e7],
                   help="inverse temperatures, comma list (default 1e7, the paper's T = 1e-7)")
    p.add_argument("--dtype", type=_dtype_list, default=["float64", "float32"],
                   help="comma list of float64, float32, bfloat16 (default float64,float32)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu, cuda, or auto (= cuda if available; default auto)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seed of the random graphs, 0 to 2^32-1 (default 0)")
    p.add_argument("--graph-file", metavar="PATH", help="run this graph (format: verify/graph_inputs.py)")
    p.add_argument("--source", type=_int_in(0, 10**6), default=0, help="source node of --graph-file (default 0)")
    p.add_argument("--json", metavar="PATH", help="write configuration and rows as JSON")
    p.add_argument("--show-attention", metavar="PATH",
                   help="PNG: both heads' softmax weights over the loops (first graph, dtype and lam)")
    p.add_argument("--show-layout", metavar="PATH",
                   help="PNG: the state registers after every loop (first graph, dtype and lam)")
    p.add_argument("--quiet", action="store_true", help="print only the verdict")


def _fail(msg: str) -> int:
    print(f"python -m verify: error: {msg}", file=sys.stderr)
    return 2


def _check_output(flag: str, path: str | None) -> str | None:
    if path is None:
        return None
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d) or not os.access(d, os.W_OK) or os.path.isdir(path):
        return f"argument {flag}: cannot write {path!r} (its folder is missing or not writable, or it is a folder)"
    return None


# -- the run -----------------------------------------------------------------------------------------
def _row(rule: str, dtype: str, lam: float, n: int, wmax: int, graphs: list[tuple[Graph, int]],
         device: str) -> dict:
    spec = SearchSpec(rule, n, lam, wmax)
    w = search_weights(spec)
    model = build_model(w, dtype=DTYPES[dtype], device=device)
    runs = []
    for i in range(0, len(graphs), BATCH):
        runs += emulate_batch(model, w.layout, rule, graphs[i:i + BATCH], DTYPES[dtype], device)
    bad = [(i, r) for i, r in enumerate(runs) if not r.exact]
    return {"dtype": dtype, "lam": lam, "n": n, "max_weight": wmax, "graphs": len(runs),
            "exact": len(runs) - len(bad), "loops": sum(r.loops for r in runs),
            "first_failure": f"graph {bad[0][0]}: {bad[0][1].failure}" if bad else None}


def random_graphs(n: int, count: int, p: float | None, wmax: int, seed: int, directed: bool) -> list[tuple[Graph, int]]:
    """``count`` seeded graphs of n nodes, source 0; the same graphs for every dtype and lam."""
    rngs = [np.random.default_rng([seed, n, wmax, i]) for i in range(count)]
    return [(random_graph(n, default_p(n) if p is None else p, wmax, rng, directed), 0) for rng in rngs]


def _prefix(values: list, ok: set) -> object:
    """The largest value v such that every value <= v in the sweep is exact (None if the smallest is not)."""
    best = None
    for v in sorted(values):
        if v not in ok:
            break
        best = v
    return best


def verdict(rule: str, rows: list[dict]) -> list[str]:
    """Per dtype and lam: the largest n (dijkstra: per n, the largest weight bound) up to which every
    row of the sweep is exact."""
    lines = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for lam in dict.fromkeys(r["lam"] for r in rows):
            rs = [r for r in rows if r["dtype"] == dtype and r["lam"] == lam]
            exact = {(r["n"], r["max_weight"]) for r in rs if r["exact"] == r["graphs"]}
            sizes = list(dict.fromkeys(r["n"] for r in rs))
            if rule == "dijkstra":
                ws = sorted({r["max_weight"] for r in rs})
                best = {n: _prefix(ws, {w for m, w in exact if m == n}) for n in sizes}
                desc = "largest exact weight bound: " + ", ".join(
                    f"n={n}: {'none' if b is None else b}" for n, b in best.items())
            else:
                desc = f"largest exact n: {_prefix(sizes, {m for m, _ in exact}) or 'none'}"
            lines.append(f"{dtype} lam={lam:g}: {len(exact)}/{len(rs)} rows exact; {desc}")
    return lines


def run(args: argparse.Namespace) -> int:
    rule = args.algorithm
    for flag, path in (("--json", args.json), ("--show-attention", args.show_attention),
                       ("--show-layout", args.show_layout)):
        if (msg := _check_output(flag, path)) is not None:
            return _fail(msg)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    if device == "cuda" and not torch.cuda.is_available():
        return _fail("argument --device: 'cuda' requested but no CUDA device is available")
    if args.graph_file:
        try:
            g = read_graph_file(args.graph_file)
        except GraphFileError as e:
            return _fail(str(e))
        if args.source >= g.n:
            return _fail(f"argument --source: {args.source} is not a node of {args.graph_file} (nodes 0..{g.n - 1})")
        sizes, weights = [g.n], [max(1, g.max_weight)]
        inputs = {(g.n, weights[0]): [(g, args.source)]}
    else:
        sizes, weights = args.n, (args.max_weight if rule == "dijkstra" else [1])
        inputs = {(n, w): random_graphs(n, args.graphs, args.p, w, args.seed, args.directed)
                  for n in sizes for w in weights}
    config = {"rule": rule, "dtypes": args.dtype, "device": device, "seed": args.seed, "n": sizes,
              "graphs": 1 if args.graph_file else args.graphs, "lam": args.lam,
              "p": "file" if args.graph_file else ("min(1, 2 ln n / n)" if args.p is None else args.p),
              "directed": args.directed, "graph_file": args.graph_file, "torch": torch.__version__}
    if rule == "dijkstra":
        config["max_weight"] = weights
    print("config: " + " ".join(f"{k}={v}" for k, v in config.items()), flush=True)
    rows = []
    for dtype in args.dtype:
        for lam in args.lam:
            for (n, w), graphs in inputs.items():
                row = _row(rule, dtype, lam, n, w, graphs, device)
                rows.append(row)
                if not args.quiet:
                    print(f"{dtype:9s} lam={lam:<8g} n={n:<5d} w<={w:<8d} exact {row['exact']}/{row['graphs']} "
                          f"loops={row['loops']}" + (f"  first failure: {row['first_failure']}" if row["first_failure"] else ""),
                          flush=True)
    lines = verdict(rule, rows)
    print("verdict:")
    for line in lines:
        print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "rows": rows, "verdict": lines}, f, indent=1)
    if args.show_attention or args.show_layout:
        from . import graph_views
        (n, w), graphs = next(iter(inputs.items()))
        spec, dtype = SearchSpec(rule, n, args.lam[0], w), DTYPES[args.dtype[0]]
        for path, draw in ((args.show_attention, graph_views.attention_figure),
                           (args.show_layout, graph_views.layout_figure)):
            if path:
                draw(spec, graphs[0][0], graphs[0][1], dtype, path)
                print(f"wrote {path}")
    return 0 if all(r["exact"] == r["graphs"] for r in rows) else 1


def _command(rule: str) -> Command:
    return Command(rule, f"{rule} as a looped transformer (de Luca and Fountoulakis 2024), checked at every loop",
                   add_arguments, run, __doc__.splitlines()[0])


BFS, DFS, DIJKSTRA = (_command(rule) for rule in ("bfs", "dfs", "dijkstra"))
