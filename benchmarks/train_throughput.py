"""Training throughput (samples/s) and peak memory of the three models at the paper's default size.

    python benchmarks/train_throughput.py                       # CPU, and GPU if present
    python benchmarks/train_throughput.py --steps 3 --batch 16 --devices cpu
    python benchmarks/train_throughput.py --mode yang --peer /tmp/peer/scripts --threads 1

``--mode yang``: exactly the configuration of Yang et al.'s looped transformer on linear regression
(d = 20, 41 points, batch 64, width 256, 8 heads, 1 layer, 20 loops with the loss over the last 15,
the first 5 without autograd, Adam at 1e-4, float32). With ``--peer DIR`` (the scripts/ folder of a
Leiay/looped_transformer checkout) the peer's own training step runs beside ours in the same process,
interleaved round by round (``--rounds``), and the ratio is the median of the per-round ratios, so
that machine noise hits both alike. Our Eq. 3 loss also reads the output after loop 5 (the window
includes T0), one read-out more than the peer's 15; the gradient path is the same 15 loops.

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


BACKEND = ["inductor"]     # --compile-backend (the GPU check's dry run uses "eager": dynamo without codegen)
TINY = dict(T=2, delta_T=2, d=2, N=6, width=16, heads=2)   # --tiny: smoke sizes (the GPU check's dry run)


def bench(model_name: str, device: torch.device, batch: int, steps: int, warmup: int, compile_: bool,
          T: int = 20, delta_T: int = 15, d: int = 20, N: int = 40, width: int = 256, heads: int = 8) -> dict:
    torch.manual_seed(0)
    task = TaskSpec("representation", d=d)
    spec = ModelSpec(model_name, width=width, heads=heads, layers=2 if width < 256 and model_name == "standard" else None)
    model = build_model(spec, d, task.d_out, task.n_tokens(N)).to(device)
    loss_mod = torch.compile(Eq3Loss(model), backend=BACKEND[0]) if compile_ else Eq3Loss(model)
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


YANG = dict(d=20, n_points=41, batch=64, width=256, heads=8, layers=1, loops=20, window=15, lr=1e-4)


def yang_step(device: torch.device, compile_: bool = False, c: dict = YANG):
    """(step, model): one training step of our looped model at Yang et al.'s configuration."""
    torch.manual_seed(0)
    task = TaskSpec("linear", d=c["d"])
    spec = ModelSpec("looped", width=c["width"], heads=c["heads"], layers=c["layers"])
    model = build_model(spec, c["d"], task.d_out, task.n_tokens(c["n_points"])).to(device).train()
    loss_mod = torch.compile(Eq3Loss(model), backend=BACKEND[0]) if compile_ else Eq3Loss(model)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    rng = np.random.default_rng(0)

    def step():
        p = task.sample(rng, c["batch"], c["n_points"])
        tok, tgt, w = (torch.from_numpy(a.astype(np.float32)).to(device, non_blocking=True)
                       for a in (p.tokens, p.targets, p.weight))
        loss = loss_mod(tok, tgt, w, c["loops"], c["window"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, model


def _timed(step, n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def run_yang(a) -> int:
    device = torch.device(a.devices[0] if a.devices else "cpu")
    c = {**YANG, **(dict(d=2, n_points=6, batch=a.batch, width=16, heads=2, loops=3, window=2) if a.tiny else {})}
    ours, model = yang_step(device, a.compile, c)
    runners = [("ours", ours, param_count(model))]
    if a.peer:
        from peer_looped_transformer import peer_step
        theirs, peer_model = peer_step(Path(a.peer), c["d"], c["n_points"], c["batch"], c["width"], c["heads"],
                                       c["layers"], c["loops"], c["window"], c["lr"], device)
        runners.append(("peer", theirs, param_count(peer_model)))
    print(f"mode=yang config={c} device={device} dtype=float32 threads={torch.get_num_threads()} "
          f"rounds={a.rounds} steps/round={a.steps} warmup={a.warmup} compile={a.compile} torch={torch.__version__}")
    peaks = {}
    for name, step, _ in runners:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _timed(step, a.warmup, device)
        peaks[name] = _peak_mib(device)
    rates = {name: [] for name, _, _ in runners}
    for r in range(a.rounds):
        for name, step, _ in runners:
            rates[name].append(a.steps * c["batch"] / _timed(step, a.steps, device))
        print(f"round {r + 1}/{a.rounds}: " + "  ".join(f"{n} {v[-1]:.1f} samples/s" for n, v in rates.items()),
              flush=True)
    print(f"{'code':>5} {'params':>9} {'samples/s (median)':>19} {'peak MiB':>9}")
    for name, _, n_params in runners:
        print(f"{name:>5} {n_params:>9,} {float(np.median(rates[name])):>19.1f} {peaks[name]:>9.0f}")
    if a.peer:
        ratio = float(np.median(np.array(rates["ours"]) / np.array(rates["peer"])))
        print(f"ratio ours/peer (median of per-round ratios): {ratio:.3f}")
    if device.type == "cpu":
        print("peak MiB on CPU: the process's peak resident set size after each code's warm-up "
              "(cumulative: read the second as an upper bound)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda if present")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mode", choices=("paper", "yang"), default="paper",
                   help="paper: the three models at the paper's size; yang: Yang et al.'s looped configuration")
    p.add_argument("--peer", default=None, help="yang mode: the scripts/ folder of a Leiay/looped_transformer "
                   "checkout, timed beside ours")
    p.add_argument("--rounds", type=int, default=3, help="yang mode: interleaved timing rounds")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--tiny", action="store_true", help="smoke sizes (width 16, d 2, N 6, T 2): checks the "
                   "code path, measures nothing of interest")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    BACKEND[0] = a.compile_backend
    if a.mode == "yang":
        return run_yang(a)
    devices = a.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"batch={a.batch} steps={a.steps} warmup={a.warmup} compile={a.compile} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'model':>11} {'device':>7} {'params':>11} {'samples/s':>10} {'peak MiB':>9}")
    for dev in devices:
        for m in a.models:
            r = bench(m, torch.device(dev), a.batch, a.steps, a.warmup, a.compile, **(TINY if a.tiny else {}))
            print(f"{r['model']:>11} {r['device']:>7} {r['params']:>11,} {r['samples_per_s']:>10.1f} "
                  f"{r['peak_mib']:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
