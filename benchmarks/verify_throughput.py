"""Throughput of the verifier's inner loop, against the machine's own limit for the same work.

For the Newton and GD constructions, per device and dtype, ``--temps`` temperatures run two ways:

    model    each construction on the PyTorch model (``verify.emulate.emulate``): dense D x D-wide maps
    packed   each construction as the sweep runs it (``verify.packed``): the zero columns and rows
             skipped, the problems in one chunk per thread, one intra-op thread each

Each prints wall time, (problems x temperatures x loops) per second, the GFLOP/s achieved (2 per
multiply-add of the matmuls that forward really runs: the model's dense ones, the packed ones), and
two limits measured in the same run on random data:

    limit     the GFLOP/s of plain ``torch.bmm`` calls of exactly those shapes, dtype and device, run
              the way the path runs them (the model: whole batch, all threads; packed: one chunk per
              thread, one thread each); ``of limit`` is the ratio
    core s    the seconds that the attention core alone takes on those shapes: per head the scores
              bmm, the softmax and pattern @ values. Any emulation that rounds as the model does
              runs these kernels as they are; ``core/wall`` is their share of the path's wall time
    floor s   core s plus the path's other products at their bmm limit: the time these kernels
              need, run back to back on random data; ``of floor`` is floor s / wall_s, how close to
              the speed its own kernels allow the path runs

    python benchmarks/verify_throughput.py [--problems 64] [--temps 8] [--iters 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from constructions.bridge import model_config
from verify.emulate import emulate
from verify.interface import Options
from verify.packed import Packed, intra_op_threads
from verify.registry import get
from verify.sweep import DTYPES, schedule_temps


def dense_matmuls(cfg, B: int, n: int, iters: int, core: bool = True) -> list[tuple[int, int, int, int, int]]:
    """(count, batch, M, K, N) of the model's own matmuls (``algoformer.layer``) for one construction
    (without ``core``: not the attention's scores and pattern @ values)."""
    out = []
    for stack, count in (("pre", 1), ("loop", iters), ("post", 1)):
        for l in getattr(cfg, stack):
            D, H, k, r, F = l.d_model, l.n_heads, l.d_head, l.value_dim, l.d_ff
            if H:
                out += [(count, 1, B * n, D, H * k)] * 2 + [(count, 1, B * n, D, H * r), (count, 1, B * n, H * r, D)]
                out += [(count, B * H, n, k, n), (count, B * H, n, n, r)] if core else []
            if F:
                out += [(count, 1, B * n, D, F), (count, 1, B * n, F, D)]
    return out


def flops(matmuls) -> int:
    return sum(2 * c * b * m * k * n for c, b, m, k, n in matmuls)


def limit(matmuls, dtype: torch.dtype, device: str, threads: int | None = None, share: float = 1.0) -> float:
    """GFLOP/s of plain bmm calls of these shapes (random data, each timed over a few repetitions),
    with ``threads`` intra-op threads (default: as set); ``share``: the fraction of the calls each of the
    parallel chunks runs (1 / chunks, the chunks on as many cores at once)."""
    total_t, total_f = 0.0, 0
    g = torch.Generator(device="cpu").manual_seed(0)
    with intra_op_threads(threads):
        for shape in sorted(set(m[1:] for m in matmuls)):
            count = sum(m[0] for m in matmuls if m[1:] == shape)
            b, m, k, n = shape
            x = torch.randn(b, m, k, generator=g).to(dtype=dtype, device=device)
            w = torch.randn(b, k, n, generator=g).to(dtype=dtype, device=device)
            torch.bmm(x, w)
            reps = 3
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.bmm(x, w)
            _sync(device)
            total_t += share * count * (time.perf_counter() - t0) / reps
            total_f += count * 2 * b * m * k * n
    return total_f / total_t / 1e9


def core_seconds(cfg, B: int, n: int, iters: int, dtype: torch.dtype, device: str, threads: int | None = None) -> float:
    """Seconds of the attention core alone for one construction over B problems: per layer and head,
    the (B, n, k) x (B, k, n) scores bmm, the softmax over n keys and the (B, n, n) x (B, n, r) bmm,
    on random data of those shapes (O(1) scores, so no subnormal slows the softmax)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    total = 0.0
    with intra_op_threads(threads):
        for stack, count in (("pre", 1), ("loop", iters), ("post", 1)):
            for l in getattr(cfg, stack):
                if not l.n_heads:
                    continue
                q = torch.randn(B, n, l.d_head, generator=g).to(dtype=dtype, device=device)
                k = torch.randn(B, n, l.d_head, generator=g).to(dtype=dtype, device=device)
                v = torch.randn(B, n, l.value_dim, generator=g).to(dtype=dtype, device=device)
                core = lambda: torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)
                core()
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(3):
                    core()
                _sync(device)
                total += count * l.n_heads * (time.perf_counter() - t0) / 3
    return total


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench(algo_name: str, device: str, dtype_name: str, problems: int, temps: int, iters: int, seed: int):
    algo = get(algo_name)
    opts = Options(problems=problems, seed=seed)
    p = algo.draw(np.random.default_rng(seed), opts)
    step = algo.choose_step(p)
    scores = algo.score_bounds(p, step)
    n = algo.n_tokens(opts)
    thetas = np.logspace(-1, -4, temps)
    cons = [algo.build(opts, step, schedule_temps(t, "odd+mirror", n, scores), "odd+mirror") for t in thetas]
    dtype = DTYPES[dtype_name]
    emulate(cons[0], p, 1, dtype, device, every_prediction=False)          # warm-up
    _sync(device)
    t0 = time.perf_counter()
    model_runs = [emulate(con, p, iters, dtype, device, every_prediction=False) for con in cons]
    _sync(device)
    wall_model = time.perf_counter() - t0
    packed = [Packed([con], dtype, device) for con in cons]
    workers = torch.get_num_threads() if device == "cpu" else 1
    chunk = -(-problems // workers)
    packed[0].run(p, 1)                                                      # warm-up, packing and probes
    _sync(device)
    t0 = time.perf_counter()
    packed_runs = [pk.run(p, iters)[0] for pk in packed]                     # as the sweep runs its rows
    _sync(device)
    wall_packed = time.perf_counter() - t0
    same = all(np.array_equal(a.iterates, b.iterates, equal_nan=True)
               and np.array_equal(a.predictions, b.predictions, equal_nan=True) for a, b in zip(model_runs, packed_runs))
    cfg = model_config(cons[0].weights)
    dense = dense_matmuls(cfg, problems, n, iters) * temps
    sparse = packed[0].matmuls(chunk, n, iters) * (temps * workers)         # one chunk's, per chunk
    rate = lambda wall: problems * temps * iters / wall
    one = 1 if workers > 1 else None
    core_model = temps * core_seconds(cfg, problems, n, iters, dtype, device)
    core_packed = temps * core_seconds(cfg, chunk, n, iters, dtype, device, one)   # the chunks side by side
    products = dense_matmuls(cfg, problems, n, iters, core=False) * temps
    floor_model = core_model + flops(products) / limit(products, dtype, device) / 1e9
    products = packed[0].matmuls(chunk, n, iters, core=False) * (temps * workers)
    floor_packed = core_packed + flops(products) / limit(products, dtype, device, one, 1 / workers) / 1e9
    return [("model", wall_model, rate(wall_model), flops(dense) / wall_model / 1e9, limit(dense, dtype, device),
             core_model, floor_model),
            ("packed", wall_packed, rate(wall_packed), flops(sparse) / wall_packed / 1e9,
             limit(sparse, dtype, device, one, 1 / workers), core_packed, floor_packed)], same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--temps", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name in ("problems", "temps", "iters"):
        if getattr(args, name) < 1:
            print(f"verify_throughput.py: error: argument --{name}: {getattr(args, name)} is invalid: "
                  "expected an integer >= 1", file=sys.stderr)
            return 2
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, problems={args.problems}, "
          f"temperatures={args.temps}, loops={args.iters}, N=40, d=20, variant=odd+mirror, seed={args.seed}, "
          f"devices={devices}")
    print(f"{'algorithm':9} {'device':6} {'dtype':8} {'path':7} {'wall_s':>7} {'problem*temp*loop/s':>20} "
          f"{'GFLOP/s':>8} {'limit':>8} {'of limit':>8} {'core s':>7} {'core/wall':>9} {'floor s':>7} "
          f"{'of floor':>8}  packed == model")
    for algo in ("newton", "gd"):
        for device in devices:
            for dtype in ("float64", "float32"):
                rows, same = bench(algo, device, dtype, args.problems, args.temps, args.iters, args.seed)
                for path, wall, rate, gflops, lim, core, floor in rows:
                    print(f"{algo:9} {device:6} {dtype:8} {path:7} {wall:7.2f} {rate:20.0f} {gflops:8.2f} {lim:8.2f} "
                          f"{gflops / lim:8.0%} {core:7.2f} {core / wall:9.0%} {floor:7.2f} {floor / wall:8.0%}  "
                          f"{'bit for bit' if same else 'DIFFERENT'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
