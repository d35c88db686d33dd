"""Where finite precision and temperature break the SUBLEQ looped transformer (larger sweeps than
``python -m verify subleq --sweep``).

1. Per dtype and program: the smallest lam on a fine grid from which every larger grid lam is exact at
   every loop, beside the derived sufficient bound ``lambda_bound``.
2. Per dtype: bits per word ascending (lam = 1.25 x bound) until the first size that is not exact on
   seeded random programs (16 instructions, 32 loops), for each cell count.

    python benchmarks/subleq_precision.py [--cells 8,256,1024] [--bits 2,3,...] [--trials 8] [--dtypes ...]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from constructions.subleq import lambda_bound
from constructions.subleq_layout import Shape
from constructions.subleq_programs import PROGRAMS
from verify.subleq import memory_sweep
from verify.subleq_run import run_batch


def ints(s):
    return [int(v) for v in s.split(",")]


def threshold(program, dtype: str, grid) -> float | None:
    """The smallest grid lam from which every larger grid lam is exact (None: not even the largest)."""
    best = None
    for lam in reversed(grid):
        if not run_batch([program], lam, dtype)[0].exact:
            break
        best = lam
    return best


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=ints, default=[8, 256, 1024])
    p.add_argument("--bits", type=ints, default=[2, 3, 4, 5, 6, 8, 12, 16, 17, 18, 19, 20, 24, 32, 40, 48, 52])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--dtypes", default="float64,float32,bfloat16")
    p.add_argument("--lam-grid", default="1:10:0.25", help="start:stop:step of the lam grid")
    p.add_argument("--programs", default=",".join(PROGRAMS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dtypes = args.dtypes.split(",")
    a, b, s = (float(v) for v in args.lam_grid.split(":"))
    grid = list(np.round(np.arange(a, b + s / 2, s), 6))
    torch.set_num_threads(1)
    print(f"config: dtypes={args.dtypes} cells={args.cells} bits={args.bits} trials={args.trials} "
          f"lam_grid={args.lam_grid} seed={args.seed} torch={torch.__version__} device=cpu")
    print("dtype  program  lam_bound  smallest_exact_lam")
    for dt in dtypes:
        for name in args.programs.split(","):
            prog = PROGRAMS[name]()
            print(f"{dt}  {name}  {lambda_bound(Shape.of(prog)):.3f}  {threshold(prog, dt, grid)}")
    print("dtype  cells  bits  lam  exact  of  seconds  first_failure")
    for dt in dtypes:
        for M in args.cells:
            for B in args.bits:
                t0 = time.perf_counter()
                r = memory_sweep([M], [B], [dt], "cpu", args.trials, args.seed)[0]
                wall = time.perf_counter() - t0
                print(f"{dt}  {M}  {B}  {r['lam']}  {r['exact']}  {r['of']}  {wall:.1f}  {r['first_failure']}", flush=True)
                if r["exact"] < r["of"]:
                    break


if __name__ == "__main__":
    main()
