"""Training throughput (samples/s) and peak memory of the three models at the paper's default size.

    python benchmarks/train_throughput.py                       # CPU, and GPU if present
    python benchmarks/train_throughput.py --steps 3 --batch 16 --devices cpu

Paper default (Section 5.1): regression with representation, d = 20, N = 40 (80 tokens), D = 256,
8 heads, (T, Delta T) = (20, 15); standard transformer 12 layers; AlgoFormer 1 + 1 + 1 layers.
One step = sampling the batch on the host, the Eq. 3 loss, backward, Adam. GPU runs use bf16
autocast and fused attention; peak memory is torch.cuda.max_memory_allocated. On CPU it is the
process's peak resident set size (it only grows, so read it as an upper bound per model).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algoformer.layer import param_count  # noqa: E402
from algoformer.training.loss import Eq3Loss  # noqa: E402
from algoformer.training.models import MODELS, ModelSpec, build_model  # noqa: E402
from algoformer.training.prompts import TaskSpec  # noqa: E402


def bench(model_name: str, device: torch.device, batch: int, steps: int, warmup: int, compile_: bool,
          T: int = 20, delta_T: int = 15, d: int = 20, N: int = 40) -> dict:
    torch.manual_seed(0)
    task = TaskSpec("representation", d=d)
    model = build_model(ModelSpec(model_name), d, task.d_out, task.n_tokens(N)).to(device)
    loss_mod = torch.compile(Eq3Loss(model)) if compile_ else Eq3Loss(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loops = T if model_name != "standard" else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    rng = np.random.default_rng(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        p = task.sample(rng, batch, N)
        tok, tgt, w = (torch.from_numpy(a.astype(np.float32)).to(device, non_blocking=True)
                       for a in (p.tokens, p.targets, p.weight))
        with autocast:
            loss = loss_mod(tok, tgt, w, loops, delta_T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model_name, "device": str(device), "params": param_count(model),
            "samples_per_s": steps * batch / dt, "peak_mib": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda if present")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"batch={a.batch} steps={a.steps} warmup={a.warmup} compile={a.compile} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'model':>11} {'device':>7} {'params':>11} {'samples/s':>10} {'peak MiB':>9}")
    for dev in devices:
        for m in a.models:
            r = bench(m, torch.device(dev), a.batch, a.steps, a.warmup, a.compile)
            print(f"{r['model']:>11} {r['device']:>7} {r['params']:>11,} {r['samples_per_s']:>10.1f} "
                  f"{r['peak_mib']:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
