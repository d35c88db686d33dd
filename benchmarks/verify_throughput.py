"""Throughput of the verifier's inner loop: constructed AlgoFormer forward passes.

Prints wall time and (problems x temperatures x loops) per second for the Newton and GD
constructions, per dtype, on CPU and (where present) CUDA. Problems are batched: one forward pass per
loop for the whole batch.

    python benchmarks/verify_throughput.py [--problems 64] [--temps 8] [--iters 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from verify.algorithms import ALGORITHMS, Options
from verify.emulate import emulate
from verify.sweep import DTYPES, schedule_temps


def bench(algo_name: str, device: str, dtype_name: str, problems: int, temps: int, iters: int) -> tuple[float, float]:
    algo = ALGORITHMS[algo_name]
    opts = Options(problems=problems)
    p = algo.draw(np.random.default_rng(0), opts)
    step = algo.choose_step(p)
    scores = algo.score_bounds(p, step)
    thetas = np.logspace(-1, -4, temps)
    cons = [algo.build(opts, step, schedule_temps(t, "odd+mirror", 2 * opts.N + 2, scores), "odd+mirror") for t in thetas]
    emulate(cons[0], p, 1, DTYPES[dtype_name], device, every_prediction=False)          # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for con in cons:
        emulate(con, p, iters, DTYPES[dtype_name], device, every_prediction=False)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return wall, problems * temps * iters / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--temps", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, problems={args.problems}, "
          f"temperatures={args.temps}, loops={args.iters}, N=40, d=20, variant=odd+mirror")
    print(f"{'algorithm':10} {'device':6} {'dtype':8} {'wall_s':>8} {'problem*temp*loop/s':>20}")
    for algo in ("newton", "gd"):
        for device in devices:
            for dtype in ("float64", "float32"):
                wall, rate = bench(algo, device, dtype, args.problems, args.temps, args.iters)
                print(f"{algo:10} {device:6} {dtype:8} {wall:8.2f} {rate:20.0f}")


if __name__ == "__main__":
    main()
