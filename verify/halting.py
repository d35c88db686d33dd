"""Halting loops against numpy: ``python -m verify halting --algorithm gd|newton --tol TOL``.

The model (``AlgoFormer.forward_halting``) loops each problem until the convergence gadget
(``constructions.halting``) has seen an update of the iterate with max |delta| <= tol; numpy runs the
same algorithm and stops at the first k >= 1 where its own update max |it_k - it_{k-1}| <= tol (both
capped at ``max_loops``). Two claims are checked per problem:

1. The halted iterate equals numpy's iterate at the same k within the emulation's per-loop bound
   e_k (``verify.bounds``: ``gd_emulation_bound``, ``newton_emulation_bound``; both bound the
   deviation from numpy run on the prompt *as the model holds it*, i.e. rounded to the run's dtype).
2. The loop counts agree unless numpy's update comes within the measurement slack of the tolerance
   at some loop up to numpy's count. The model's measured update at loop k differs from numpy's a_k by
   at most eps_k = e_k + e_{k-1} + 3u (|it_k| + |it_{k-1}| + e_k + e_{k-1} + tol) (the gadget's input
   rounding); the gadget turns the flag on below tol and off above tol + (1 - tau) w (1 + (2s + 2n + 8)u).
   So loop k is *near* when tol - eps_k < a_k < tol + (1 - tau) w (1 + (2s + 2n + 8)u) + eps_k, and if no
   loop k <= numpy's count is near, the counts are equal (for k below numpy's count a_k > tol and not
   near, so the model does not stop; at numpy's count a_k <= tol - eps_k, so it stops).
Disagreements outside the near loops are failures (exit 1), as are iterates outside their bound.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from algoformer.tasks import Regression
from constructions.bridge import build_model
from constructions.halting import HaltingConstruction, gd_halting, newton_halting
from constructions.linearise import DEFAULT_VARIANT, VARIANTS

from .algorithms import GD, NEWTON, Options
from .interface import ArgumentError, Command
from .options import _int_in, _positive_float
from .bounds import gd_emulation_bound, newton_emulation_bound
from .sweep import PRECISIONS, auto_temps, precision, unit_roundoff

GADGETS = {"gd": (GD, gd_halting), "newton": (NEWTON, newton_halting)}


def update_norms(iterates: np.ndarray) -> np.ndarray:
    """(B, T+1, ...) -> (B, T): a_k = max |it_k - it_{k-1}| over tokens and rows, k = 1..T."""
    B, T1 = iterates.shape[:2]
    return np.abs(np.diff(iterates, axis=1)).reshape(B, T1 - 1, -1).max(axis=2)


def first_below(updates: np.ndarray, tol: float) -> np.ndarray:
    """(B, T) -> (B,): the first k >= 1 with a_k <= tol, or T where there is none."""
    below = updates <= tol
    return np.where(below.any(axis=1), below.argmax(axis=1) + 1, updates.shape[1])


def near_tolerance(ref_iterates: np.ndarray, bound: np.ndarray, tol: float, ramp: float, rows: int,
                   n_tokens: int, u: float, threshold: float = 0.5) -> np.ndarray:
    """(B, T) bool: loop k's numpy update lies where the model's decision may differ (module docstring)."""
    B, T1 = ref_iterates.shape[:2]
    a = update_norms(ref_iterates)
    big = np.abs(ref_iterates).reshape(B, T1, -1).max(axis=2)                       # (B, T+1)
    with np.errstate(invalid="ignore", over="ignore"):
        eps = bound[:, 1:] + bound[:, :-1] + 3 * u * (big[:, 1:] + big[:, :-1] + bound[:, 1:] + bound[:, :-1] + tol)
        top = tol + (1 - threshold) * ramp * (1 + (2 * rows + 2 * n_tokens + 8) * u)
        near = (a > tol - eps) & (a < top + eps)
    return near | ~np.isfinite(eps)


@dataclass(frozen=True)
class HaltingRun:
    loops_model: np.ndarray      # (B,)
    loops_numpy: np.ndarray      # (B,)
    may_differ: np.ndarray       # (B,) bool: some loop k <= numpy's count is near the tolerance
    error: np.ndarray            # (B,) max |halted iterate - numpy iterate at the model's count|
    bound: np.ndarray            # (B,) e_k at the model's count
    update_numpy: np.ndarray     # (B,) numpy's a_k at numpy's count
    finite: bool                 # every emulated state finite

    @property
    def unexplained(self) -> np.ndarray:
        """Disagreements that the near-tolerance band does not explain (should be none)."""
        return (self.loops_model != self.loops_numpy) & ~self.may_differ

    @property
    def passed(self) -> bool:
        return self.finite and not self.unexplained.any() and bool(np.all(self.error <= self.bound))


def held(problem: Regression, dtype_name: str) -> Regression:
    """The problem as the model holds it: rounded to the run's storage dtype (then float64)."""
    np_dtype = {torch.float64: np.float64, torch.float32: np.float32}.get(precision(dtype_name).storage)
    if np_dtype is None:                       # bfloat16: numpy has no such dtype; round through torch
        r = lambda a: torch.from_numpy(np.asarray(a)).to(precision(dtype_name).storage).double().numpy()
    else:
        r = lambda a: np.asarray(a).astype(np_dtype).astype(np.float64)
    return type(problem)(*(r(getattr(problem, k)) for k in ("x", "y", "x_test", "y_test")))


def emulation_bound(name: str, p: Regression, ref, step: float, iters: int, temps, variant: str, u: float):
    n = 2 * p.x.shape[1] + 2
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "gd":
            return gd_emulation_bound(p, ref, step, temps["loop"], variant, n, u)
        return newton_emulation_bound(p, step, iters, temps, variant, n, u)["iterate"]


def run_model(hc: HaltingConstruction, p: Regression, max_loops: int, dtype, device: str):
    """(loops (B,), halted iterates (B, ...), every cached state finite)."""
    con = hc.construction
    model = build_model(con.weights, dtype=precision(dtype).storage, device=device,
                        attention_dtype=precision(dtype).attention)
    tokens = torch.from_numpy(con.encode(p.x, p.y, p.x_test)).to(dtype=precision(dtype).storage, device=device)
    _, cache = model.run_with_cache(tokens, max_loops, halting=hc.rule)
    loops = cache["hook_loops"].cpu().numpy()
    last = cache[f"loop.{loops.max()}.hook_state"] if loops.max() > 0 else cache["hook_pre"]
    finite = all(bool(torch.isfinite(v).all()) for k, v in cache.items() if k.endswith("hook_state"))
    return loops, con.iterate.read(con.layout, last).double().cpu().numpy(), finite


@dataclass(frozen=True)
class Setup:
    """The seeded problems (as the model holds them), the step and the temperatures of one run."""
    name: str
    problem: Regression
    step: float
    temps: dict
    variant: str
    dtype: str
    excluded: dict

    def base(self, opts: Options):
        """The construction without the gadget (``verify.emulate`` runs it for fixed T)."""
        return GADGETS[self.name][0].build(opts, self.step, self.temps, self.variant)


def prepare(name: str, opts: Options, dtype_name: str = "float64", variant: str = DEFAULT_VARIANT) -> Setup:
    algo = GADGETS[name][0]
    p = algo.draw(np.random.default_rng(opts.seed), opts)
    step = opts.step if opts.step is not None else algo.choose_step(p)
    why = algo.violations(p, opts, step)
    keep = why == ""
    excluded = {int(i): str(why[i]) for i in np.flatnonzero(~keep)}
    if not keep.any():
        raise ValueError(f"every problem lies outside the construction's assumptions: {excluded}")
    p = held(type(p)(*(getattr(p, k)[keep] for k in ("x", "y", "x_test", "y_test"))), dtype_name)
    temps = auto_temps(variant, 2 * opts.N + 2, algo.score_bounds(p, step), dtype_name)
    return Setup(name, p, step, temps, variant, dtype_name, excluded)


def compare(name: str, opts: Options, tol: float, max_loops: int, dtype_name: str = "float64",
            device: str = "cpu", variant: str = DEFAULT_VARIANT, ramp: float | None = None) -> tuple[dict, HaltingRun]:
    """Draw the seeded problems, build the halting construction, run model and numpy, compare."""
    su = prepare(name, opts, dtype_name, variant)
    algo, gadget = GADGETS[name]
    p, step, temps, excluded, n = su.problem, su.step, su.temps, su.excluded, 2 * opts.N + 2
    hc = gadget(su.base(opts), tol, ramp)
    ref = algo.reference(p, max_loops, step)
    u = unit_roundoff(dtype_name)
    e = emulation_bound(name, p, ref, step, max_loops, temps, variant, u)
    loops, halted, finite = run_model(hc, p, max_loops, dtype_name, device)
    k_np = first_below(update_norms(ref.iterates), tol)
    rows = hc.construction.layout.size(hc.construction.iterate.register)
    near = near_tolerance(ref.iterates, e, tol, hc.ramp, rows, n, u, hc.rule.threshold)
    B = len(loops)
    may = np.array([near[b, :k_np[b]].any() for b in range(B)])
    at = ref.iterates[np.arange(B), loops]
    err = np.abs(halted - at).reshape(B, -1).max(axis=1)
    a = update_norms(ref.iterates)
    config = {"algorithm": name, "N": opts.N, "d": opts.d, "problems": opts.problems, "seed": opts.seed,
              "dtype": dtype_name, "device": device, "variant": variant, "tol": tol, "ramp": hc.ramp,
              "max_loops": max_loops, algo.step_name: step, "C_loop": temps["loop"].C, "c_loop": temps["loop"].c,
              "gadget_width": f"+{rows + 3} rows, pre +1 layer ({2 * rows} units), loop +2 layers "
                              f"({4 * rows} units; 1 head + {2 * rows + 5} units)", "excluded": excluded}
    run = HaltingRun(loops, k_np, may, err, e[np.arange(B), loops], a[np.arange(B), k_np - 1], finite)
    return config, run


# -- the command line ------------------------------------------------------------------------------






SUMMARY = "loops that halt on a convergence flag, against numpy's stopping loop"
DESCRIPTION = ("Run the GD or Newton AlgoFormer with the convergence gadget until its flag is on "
               "(update max|delta| <= tol) and compare loops and iterates with numpy.")


def add_arguments(p) -> None:
    """The options of ``python -m verify halting`` (``p``: its subparser)."""
    p.add_argument("--algorithm", dest="gadget", choices=sorted(GADGETS), required=True,
                   help="the construction whose loop gets the gadget")
    p.add_argument("--tol", type=_positive_float, required=True, help="L_inf tolerance on the iterate's update")
    p.add_argument("--max-loops", type=_int_in(1, 10_000), default=100, help="loop cap T (default 100)")
    p.add_argument("--ramp", type=_positive_float, default=None, help="the flag's ramp width w (default tol * 2^-20)")
    p.add_argument("--N", type=_int_in(1, 10_000), default=20, help="in-context samples (default 20)")
    p.add_argument("--d", type=_int_in(1, 1_000), default=5, help="input dimension (default 5)")
    p.add_argument("--problems", type=_int_in(1, 100_000), default=16, help="seeded problems (default 16)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seed of the problems, 0 to 2^32-1 (default 0)")
    p.add_argument("--step", type=_positive_float, default=None, help="eta (gd) or alpha (newton); default from the data")
    p.add_argument("--dtype", choices=[k for k, v in PRECISIONS.items() if not v.tf32], default="float64",
                   help="the precision of the run: float64, float32, bfloat16, float32+attn64, bfloat16+attn32 "
                        "(default float64)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu, cuda, or auto (= cuda if available; default auto)")
    p.add_argument("--variant", choices=list(VARIANTS), default=DEFAULT_VARIANT,
                   help=f"linearisation variant of the GD/Newton heads (default {DEFAULT_VARIANT})")
    p.add_argument("--json", metavar="PATH", help="write configuration and per-problem results as JSON")


def _check_out_path(path: str | None) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ArgumentError(f"argument --json: cannot write {path!r} (expected a file in an existing, "
                            "writable directory)")


def format_run(config: dict, run: HaltingRun) -> list[str]:
    lines = ["configuration: " + ", ".join(f"{k}={v}" for k, v in config.items() if k != "excluded")]
    if config["excluded"]:
        lines.append(f"excluded {len(config['excluded'])} problem(s): {config['excluded']}")
    lines.append(f"{'problem':>7} {'loops':>6} {'numpy':>6} {'agree':>6} {'near':>5} {'a_numpy':>9} "
                 f"{'err_iter':>9} {'bound':>9}")
    for b in range(len(run.loops_model)):
        lines.append(f"{b:7d} {run.loops_model[b]:6d} {run.loops_numpy[b]:6d} "
                     f"{'yes' if run.loops_model[b] == run.loops_numpy[b] else 'NO':>6} "
                     f"{'yes' if run.may_differ[b] else '-':>5} {run.update_numpy[b]:9.2e} "
                     f"{run.error[b]:9.2e} {run.bound[b]:9.2e}")
    agree = int((run.loops_model == run.loops_numpy).sum())
    B, T = len(run.loops_model), config["max_loops"]
    lines += ["verdict:",
              f"  loops agree on {agree}/{B} problems; {int(run.may_differ.sum())} near the tolerance; "
              f"{int(run.unexplained.sum())} disagreement(s) outside the near band",
              f"  halted iterate vs numpy at the same k: max {run.error.max():.2e} (L_inf), within the per-loop "
              f"bound on {int((run.error <= run.bound).sum())}/{B}",
              f"  loops run {int(run.loops_model.sum())} of {B * T} for fixed T={T}; states finite: {run.finite}",
              f"  {'PASS' if run.passed else 'FAIL'}"]
    return lines


def main(args: argparse.Namespace) -> int:
    """Run the ``halting`` subcommand on parsed arguments: 0 pass, 1 fail, 2 (one line) bad arguments."""
    try:
        return _main(args)
    except ArgumentError as e:
        print(f"python -m verify: error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    _check_out_path(args.json)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("argument --device: 'cuda' requested but no CUDA device is available")
    if device not in PRECISIONS[args.dtype].devices:
        raise ArgumentError(f"argument --dtype: {args.dtype!r} needs {' or '.join(PRECISIONS[args.dtype].devices)}")
    opts = Options(N=args.N, d=args.d, problems=args.problems, seed=args.seed, step=args.step)
    try:
        config, run = compare(args.gadget, opts, args.tol, args.max_loops, args.dtype, device,
                              args.variant, args.ramp)
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    config["torch"] = torch.__version__
    print("\n".join(format_run(config, run)))
    if args.json:
        import json
        out = {"config": {k: (str(v) if k == "excluded" else v) for k, v in config.items()},
               "problems": [{"loops": int(run.loops_model[b]), "numpy": int(run.loops_numpy[b]),
                             "near": bool(run.may_differ[b]), "error": float(run.error[b]),
                             "bound": float(run.bound[b])} for b in range(len(run.loops_model))],
               "passed": run.passed}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if run.passed else 1



HALTING = Command("halting", SUMMARY, add_arguments, main, DESCRIPTION)
