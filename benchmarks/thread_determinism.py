"""Whether the model's products give the same bits on one intra-op thread and on several.

For the shapes the verifier runs (64 problems x 82 tokens, D = 142), per dtype and head count H,
this multiplies random data the way ``algoformer.layer`` does: the W_O map ``z @ w_o.T`` with
z (B, n, H r), the queries ``einsum("bnd,hkd->bhnk")``, and the per-head scores, once with
``torch.set_num_threads(1)`` and once with ``--threads`` threads, and prints whether the results
are equal bit for bit. On this project's CPU (MKL 2024.2) W_O differs from H = 10 (K = 200) on:
the reason the sweep runs every row with one intra-op thread (docs/verifier-speed.md).

    python benchmarks/thread_determinism.py [--threads 2] [--heads 1,2,4,8,10,12] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys

import torch

from verify.packed import intra_op_threads


def _same(f, threads: int) -> bool:
    with intra_op_threads(1):
        one = f()
    with intra_op_threads(threads):
        many = f()
    return torch.equal(one, many)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--threads", type=int, default=max(torch.get_num_threads(), 2))
    ap.add_argument("--heads", default="1,2,4,8,10,12", help="comma list of head counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--problems", type=int, default=64)
    args = ap.parse_args()
    try:
        heads = [int(h) for h in args.heads.split(",")]
    except ValueError:
        heads = []
    if not heads or min(heads) < 1:
        print(f"thread_determinism.py: error: argument --heads: {args.heads!r} is invalid: expected a comma "
              "list of integers >= 1", file=sys.stderr)
        return 2
    for name in ("threads", "problems"):
        if getattr(args, name) < 1:
            print(f"thread_determinism.py: error: argument --{name}: {getattr(args, name)} is invalid: "
                  "expected an integer >= 1", file=sys.stderr)
            return 2
    B, n, D, k, r = args.problems, 82, 142, 20, 20
    print(f"torch {torch.__version__}, threads 1 against {args.threads}, problems={B}, n={n}, D={D}, "
          f"d_head={k}, value_dim={r}, seed={args.seed}, device=cpu")
    print(f"{'dtype':8} {'heads':>5} {'K of W_O':>8}  {'W_O':11} {'queries':11} {'scores':11}")
    g = torch.Generator().manual_seed(args.seed)
    for dtype in (torch.float64, torch.float32):
        for H in heads:
            rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
            z, w_o, h, w_q = rnd(B, n, H * r), rnd(D, H * r), rnd(B, n, D), rnd(H, k, D)
            q = torch.einsum("bnd,hkd->bhnk", h, w_q)
            verdict = lambda f: "same" if _same(f, args.threads) else "DIFFERENT"
            print(f"{str(dtype).removeprefix('torch.'):8} {H:5d} {H * r:8d}  {verdict(lambda: z @ w_o.T):11} "
                  f"{verdict(lambda: torch.einsum('bnd,hkd->bhnk', h, w_q)):11} "
                  f"{verdict(lambda: q @ q.transpose(-1, -2)):11}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
