"""Where finite precision ends the graph-search AlgoFormers: the largest graph, and for Dijkstra the
largest weight range, that each dtype runs exactly at each inverse temperature lam.

A configuration is exact when every loop of every seeded random graph matches the reference entry by
entry (``verify.graphs``). Sizes (and weight bounds) are tried in increasing order and the search stops
at the first one that fails, so "largest" means: every smaller size in the list was exact too.

    python benchmarks/graph_precision.py [--rules bfs,dfs,dijkstra] [--dtypes float64,float32,bfloat16]
        [--lams 10,30,100,300,1000,1e7] [--sizes 4,8,16,32,64] [--graphs 10]
        [--weight-n 8] [--weights 1,2,4,...,2^53] [--seed 0] [--json PATH]

Table 1: per rule, dtype and lam, the largest n (random graphs G(n, 2 ln n / n), dijkstra weights in
[1, 10]). Table 2 (dijkstra): per dtype and lam, the largest weight bound W (weights uniform in [1, W])
at n = --weight-n. Each cell also names the first failure: the size, and the register that broke.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from verify.graphs import DTYPES, _row, random_graphs


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",")]


def _ints(s: str) -> list[int]:
    return [int(float(v)) for v in s.split(",")]


def largest(values, row_for) -> tuple[object, dict | None, list[dict]]:
    """Try values in order; return (the last exact one or None, the first failing row, all rows)."""
    best, rows = None, []
    for v in values:
        row = row_for(v)
        rows.append(row)
        if row["exact"] != row["graphs"]:
            return best, row, rows
        best = v
    return best, None, rows


def _fmt(v) -> str:
    """Powers of two above 1000 as 2^k (the weight bounds)."""
    if isinstance(v, int) and v > 1000 and v & (v - 1) == 0:
        return f"2^{v.bit_length() - 1}"
    return "none" if v is None else str(v)


def _cell(best, fail, key: str) -> str:
    if fail is None:
        return f">= {_fmt(best)} (all tried)"
    where = fail["first_failure"].split(": ", 1)[1]
    reg = where.split("row ", 1)[1].split(":")[0] if "row " in where else where
    return f"{_fmt(best)} (fails at {_fmt(fail[key])}: {reg})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--rules", default="bfs,dfs,dijkstra")
    p.add_argument("--dtypes", default="float64,float32,bfloat16")
    p.add_argument("--lams", type=_floats, default=[10, 30, 100, 300, 1000, 1e7])
    p.add_argument("--sizes", type=_ints, default=[4, 8, 16, 32, 64])
    p.add_argument("--graphs", type=int, default=10)
    p.add_argument("--max-weight", type=int, default=10, help="dijkstra weights in table 1 (default 10)")
    p.add_argument("--weight-n", type=int, default=8)
    p.add_argument("--weights", type=_ints, default=[2 ** k for k in range(0, 54)])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    rules, dtypes = args.rules.split(","), args.dtypes.split(",")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        p.error(f"argument --dtypes: {bad[0]!r} is invalid: expected a comma list of {', '.join(DTYPES)}")
    print(f"config: rules={rules} dtypes={dtypes} lams={args.lams} sizes={args.sizes} graphs={args.graphs} "
          f"max_weight={args.max_weight} weight_n={args.weight_n} seed={args.seed} device=cpu "
          f"torch={torch.__version__}", flush=True)
    out, t0 = {"sizes": [], "weights": []}, time.perf_counter()
    print("\nlargest n exact at every loop of every graph:")
    print(f"{'rule':9s} {'dtype':9s} " + " ".join(f"{'lam=' + format(l, 'g'):>26s}" for l in args.lams))
    for rule in rules:
        for dtype in dtypes:
            cells = []
            for lam in args.lams:
                w = args.max_weight if rule == "dijkstra" else 1
                best, fail, rows = largest(args.sizes, lambda n: _row(
                    rule, dtype, lam, n, w, random_graphs(n, args.graphs, None, w, args.seed, False), "cpu"))
                cells.append(_cell(best, fail, "n"))
                out["sizes"].append({"rule": rule, "dtype": dtype, "lam": lam, "largest_n": best, "rows": rows})
            print(f"{rule:9s} {dtype:9s} " + " ".join(f"{c:>26s}" for c in cells), flush=True)
    if "dijkstra" in rules:
        n = args.weight_n
        print(f"\ndijkstra, n={n}: largest weight bound W (weights uniform in [1, W]) exact everywhere:")
        print(f"{'dtype':9s} " + " ".join(f"{'lam=' + format(l, 'g'):>26s}" for l in args.lams))
        for dtype in dtypes:
            cells = []
            for lam in args.lams:
                best, fail, rows = largest(args.weights, lambda W: _row(
                    "dijkstra", dtype, lam, n, W, random_graphs(n, args.graphs, None, W, args.seed, False), "cpu"))
                cells.append(_cell(best, fail, "max_weight"))
                out["weights"].append({"dtype": dtype, "lam": lam, "n": n, "largest_weight": best, "rows": rows})
            print(f"{dtype:9s} " + " ".join(f"{c:>26s}" for c in cells), flush=True)
    print(f"\nwall {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
