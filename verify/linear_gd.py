"""``python -m verify linear-gd``: GD as one linear-attention layer, looped T times, against numpy GD, the
softmax construction of the same step (Lemma A.2, ``constructions.gd``) and Chen et al. 2024's law.

    python -m verify linear-gd --iters 20 [--N 40 --d 20 --problems 16 --dtype both --ratios 2,4,8,16
                                           --law-iters 400 --plot PATH --json PATH]

1. The step (N, d, T = --iters): the linear construction (``constructions.linear_gd``) and the softmax one
   on the same seeded problems and the same eta, in each dtype, against numpy GD in float64; the linear
   one also against exact GD (np.longdouble, on the data as the dtype holds it) within its derived
   rounding bound (``linear_gd.rounding_bound``).
2. The law (``linear_gd_law``): for each n/d in --ratios, the error ||w_T - w_LS|| / ||w_LS|| after every loop
   up to --law-iters, measured (transformer per dtype, numpy GD) and in exact arithmetic (closed form),
   beside the claim exp(-T / (2 kappa)); the measured rate against its derived interval and against
   1/(2 kappa); where rounding stops the curve (the floor and the loop where it leaves exact GD).

Entry point: ``main(argv) -> int`` (0: within the bound and the rate inside its interval; 1: not;
2: bad arguments, one line on stderr). ``verify.cli`` dispatches ``linear-gd`` here.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

from algoformer.tasks import Regression, linear_regression
from constructions.bridge import build_model
from constructions.linear_gd import linear_gd_construction, rounding_bound

from . import linear_gd_law as law
from .linear_gd_report import format_law, format_step, verdict
from .emulate import emulate, relative_error
from .interface import Command
from .options import _int_in
from .references import Trajectory, gd_reference

SUMMARY = "GD as one linear-attention layer looped T times (von Oswald et al. 2023; Chen et al. 2024), with its law"
DTYPES = {"float64": torch.float64, "float32": torch.float32}
SLACK = 0.01      # relative slack on the derived rate interval: float64 rounding moves log e by << 1e-3 in the window


class ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ArgError(message)




def _ratios(s: str) -> list[float]:
    try:
        vals = [float(v) for v in s.split(",")]
    except ValueError:
        vals = []
    if not vals or not all(math.isfinite(v) and 1 < v <= 1000 for v in vals):
        raise argparse.ArgumentTypeError(f"expected a comma list of n/d ratios in (1, 1000], got {s!r}")
    return sorted(set(vals))


def _step_scale(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1] (eta = scale / lambda_max), got {s!r}")
    return v


def _dtypes(s: str) -> list[str]:
    names = list(DTYPES) if s == "both" else [v.strip() for v in s.split(",")]
    if not names or any(v not in DTYPES for v in names):
        raise argparse.ArgumentTypeError(f"expected float64, float32, both or a comma list of them, got {s!r}")
    return list(dict.fromkeys(names))


def build_parser() -> _Parser:
    p = _Parser(prog="python -m verify linear-gd", description=SUMMARY, allow_abbrev=False)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m verify linear-gd``."""
    p.add_argument("--iters", type=_int_in(0, 100_000), default=20, help="loops T of the step comparison (default 20)")
    p.add_argument("--N", type=_int_in(1, 10_000), default=40, help="in-context samples (default 40)")
    p.add_argument("--d", type=_int_in(1, 1_000), default=20, help="input dimension (default 20)")
    p.add_argument("--problems", type=_int_in(1, 10_000), default=16, help="seeded problems per size (default 16)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seed of the problems, 0 to 2^32-1 (default 0)")
    p.add_argument("--dtype", type=_dtypes, default=list(DTYPES), help="float64, float32, both (default both)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu, cuda, or auto (= cuda if available; default auto)")
    p.add_argument("--attention", choices=["exact", "sdpa"], default="sdpa",
                   help="linear attention path: exact (n x n scores) or sdpa (fused, K^T V first; default)")
    p.add_argument("--ratios", type=_ratios, default=[2.0, 4.0, 8.0, 16.0], help="n/d values of the law (default 2,4,8,16)")
    p.add_argument("--law-iters", type=_int_in(1, 100_000), default=400, help="loops of the law curves (default 400)")
    p.add_argument("--step-scale", type=_step_scale, default=1.0,
                   help="eta = scale / lambda_max(X^T X / N), the max over each batch (default 1)")
    p.add_argument("--json", metavar="PATH", help="write configuration, rows and verdict as JSON")
    p.add_argument("--plot", metavar="PATH", help="write the law figure (.png, .pdf or .svg)")
    p.add_argument("--quiet", action="store_true", help="print only the configuration and the verdict")


def _check_output(path: str | None, flag: str, suffixes: tuple[str, ...] | None = None) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ArgError(f"argument {flag}: {path!r} is a directory, expected a file path")
    if not (os.path.isdir(parent) and os.access(parent, os.W_OK)):
        raise ArgError(f"argument {flag}: directory {parent!r} does not exist or is not writable")
    if suffixes and not path.lower().endswith(suffixes):
        raise ArgError(f"argument {flag}: {path!r} must end in one of {', '.join(suffixes)}")


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ArgError("argument --device: 'cuda' requested but no CUDA device is available")
    return name


# -- the emulator (the same signature as ``references.gd_reference``, plus where to run it) ----------------
def linear_gd_emulated(problem: Regression, iters: int, eta: float, dtype: str = "float64", device: str = "cpu",
                       attention: str = "sdpa") -> Trajectory:
    """The linear looped transformer on the problems: iterates [A_k x_i - y_i, A_k x_test] (B, T+1, N+1, m)
    and predictions A_k x_test (B, T+1, m), in float64 (cast from the run's dtype)."""
    B, N, d, m = problem.sizes
    con = linear_gd_construction(d, N, eta, m)
    model = build_model(con.weights, dtype=DTYPES[dtype], device=device, attention=attention)
    h = torch.from_numpy(con.encode(problem.x, problem.y, problem.x_test)).to(DTYPES[dtype]).to(device)
    its, preds = [], []
    with torch.no_grad():
        h = model.run_pre(model.embed(h))
        for t in range(iters + 1):
            if t > 0:
                h = model.run_loop(h, t)
            its.append(con.iterate.read(con.layout, h))
            preds.append(con.answer.read(con.layout, model.run_post(h)))
    to_np = lambda xs: torch.stack(xs, 1).to(torch.float64).cpu().numpy()
    return Trajectory(to_np(its), to_np(preds))


def _rounded(problem: Regression, dtype: str) -> Regression:
    cast = lambda a: np.asarray(a).astype(np.float32 if dtype == "float32" else np.float64).astype(np.float64)
    return Regression(*(cast(getattr(problem, k)) for k in ("x", "y", "x_test", "y_test")))


def _lmax(x: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(np.einsum("bni,bnj->bij", x, x) / x.shape[1])[:, -1]


# -- 1. the step ------------------------------------------------------------------------------------------
def step_rows(args, device: str) -> tuple[float, list[dict]]:
    from constructions.linearise import DEFAULT_VARIANT
    from .algorithms import GD, Options        # here: verify.cli imports this module, and .algorithms imports its plug-ins
    from .sweep import auto_temps

    problem = linear_regression(np.random.default_rng(args.seed), args.problems, args.N, args.d, 1)
    eta = args.step_scale / float(_lmax(problem.x).max())
    ref = gd_reference(problem, args.iters, eta)
    opts = Options(N=args.N, d=args.d, problems=args.problems, seed=args.seed)
    rows = []
    for dt in args.dtype:
        lin = linear_gd_emulated(problem, args.iters, eta, dt, device, args.attention)
        held = _rounded(problem, dt)
        exact = gd_reference(held, args.iters, eta, np.longdouble)
        ex = np.asarray(exact.iterates, np.float64).reshape(args.problems, args.iters + 1, -1)
        dev = np.linalg.norm(lin.iterates.reshape(ex.shape) - ex, axis=2).max(axis=1)
        u = float(torch.finfo(DTYPES[dt]).eps) / 2
        bound = (rounding_bound(held.x, held.y, held.x_test, eta, args.iters, u)
                 + rounding_bound(held.x, held.y, held.x_test, eta, args.iters, float(np.finfo(np.longdouble).eps) / 2))
        scale = np.linalg.norm(ex, axis=2).max(axis=1)
        temps = auto_temps(DEFAULT_VARIANT, 2 * args.N + 2, GD.score_bounds(problem, eta), dt)
        soft = emulate(GD.build(opts, eta, temps, DEFAULT_VARIANT), problem, args.iters, dt, device)
        for name, trj in (("linear", lin), ("softmax", soft)):
            e_it = relative_error(trj.iterates[:, -1], ref.iterates[:, -1])
            e_pr = relative_error(trj.predictions[:, -1], ref.predictions[:, -1])
            row = dict(dtype=dt, construction=name, err_iterate_max=float(e_it.max()),
                       err_iterate_median=float(np.median(e_it)), err_prediction_max=float(e_pr.max()),
                       finite=bool(np.isfinite(trj.iterates).all()))
            if name == "linear":
                row.update(dev_exact_max=float((dev / scale).max()), bound_max=float((bound / scale).max()),
                           within_bound=bool(np.all(dev <= bound)))
            else:
                row.update(variant=DEFAULT_VARIANT, theta=float(temps["loop"].c * GD.score_bounds(problem, eta)["loop"]),
                           linear_vs_softmax_max=float(relative_error(lin.iterates[:, -1], trj.iterates[:, -1]).max()))
            rows.append(row)
    return eta, rows


# -- 2. the law -------------------------------------------------------------------------------------------
def law_groups(args, device: str) -> list[dict]:
    groups = []
    t_eval = args.iters
    for i, ratio in enumerate(args.ratios):
        N = max(args.d, int(round(ratio * args.d)))
        p = linear_regression(np.random.default_rng([args.seed, i + 1]), args.problems, N, args.d, 1)
        sp = law.spectrum(p.x, p.y)
        eta = args.step_scale / float(sp.lam[:, -1].max())
        exact = law.exact_errors(sp, eta, args.law_iters)
        curves, pred, input_floor = {}, {}, {}
        for dt in args.dtype:
            held = _rounded(p, dt)
            w_held = law.spectrum(held.x, held.y).w_ls        # what the data as held allow at best
            input_floor[dt] = float(np.median(np.linalg.norm(w_held - sp.w_ls, axis=1) / np.linalg.norm(sp.w_ls, axis=1)))
            curves[f"gd-numpy-{dt}"] = law.gd_errors(held.x, held.y, sp, eta, args.law_iters, np.dtype(dt).type)
            trj = linear_gd_emulated(p, args.law_iters, eta, dt, device, args.attention)
            curves[dt] = law.errors_from_tokens(held.x, held.y, sp, trj.iterates[:, :, :N, 0])
            y_ls = np.einsum("bd,bd->b", p.x_test, sp.w_ls)
            pred[dt] = float(np.median(np.abs(trj.predictions[:, t_eval, 0] - y_ls)
                                       / (np.linalg.norm(p.x_test, axis=1) * np.linalg.norm(sp.w_ls, axis=1))))
        k2 = 2 * sp.kappa
        g = dict(ratio=ratio, N=N, eta=eta, kappa=float(np.median(sp.kappa)), kappa_min=float(sp.kappa.min()),
                 kappa_max=float(sp.kappa.max()), kappa_mp=law.marchenko_pastur_kappa(ratio),
                 eta_L=[float((eta * sp.lam[:, -1]).min()), float((eta * sp.lam[:, -1]).max())],
                 exact=np.median(exact, axis=0), curves={k: np.median(v, axis=0) for k, v in curves.items()},
                 at_iters={k: float(np.median(v[:, t_eval])) for k, v in curves.items()},
                 exact_at_iters=float(np.median(exact[:, t_eval])), prediction_at_iters=pred, input_floor=input_floor, per_dtype={})
        for name, err in curves.items():
            floor = law.floor_of(err)
            rate = law.fitted_rate(err, floor)
            two = _two_point(err, floor, sp, eta)
            left = law.left_exact_at(err, exact)
            reached = left >= 0                  # the problems whose curve left exact GD: their level is a floor
            g["per_dtype"][name] = dict(
                floor_median=float(np.median(floor[reached])) if reached.any() else None,
                floor_max=float(floor[reached].max()) if reached.any() else None, floor_reached=int(reached.sum()),
                left_exact_median=float(np.median(left)) if (left >= 0).all() else None,
                rate_fit_x_2kappa=float(np.nanmedian(rate * k2)) if np.isfinite(rate).any() else None,
                rate_x_2kappa_range=[float(np.nanmin(two["rate"] * k2)), float(np.nanmax(two["rate"] * k2))]
                if np.isfinite(two["rate"]).any() else None,
                rate_inside=int(two["inside"].sum()), rate_checked=int(np.isfinite(two["rate"]).sum()),
                claim_holds=bool(np.all(two["claim"])))
        groups.append(g)
    return groups


def _two_point(err: np.ndarray, floor: np.ndarray, sp: law.Spectrum, eta: float) -> dict:
    """Per problem: the rate between loop 1 and the last loop above 100 x floor, its derived interval,
    and whether e_T <= exp(-T/(2 kappa)) (1 + SLACK) at every loop of that window."""
    B, n = err.shape
    rate, inside, claim = np.full(B, np.nan), np.zeros(B, bool), np.ones(B, bool)
    for b in range(B):
        above = np.flatnonzero(err[b, 1:] > 100 * floor[b]) + 1
        if len(above) < 2 or above[-1] < 2:
            continue
        t2 = int(above[-1])
        rate[b] = math.log(err[b, 1] / err[b, t2]) / (t2 - 1)
        one = law.Spectrum(sp.lam[b:b + 1], sp.coef[b:b + 1], sp.w_ls[b:b + 1])
        lo, hi = law.rate_interval(one, eta, 1, t2)
        inside[b] = lo[0] * (1 - SLACK) <= rate[b] <= hi[0] * (1 + SLACK)
        T = np.arange(1, t2 + 1)
        claim[b] = bool(np.all(err[b, 1:t2 + 1] <= np.exp(-T / (2 * sp.kappa[b])) * (1 + SLACK)))
    return dict(rate=rate, inside=inside, claim=claim)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run (also ``python -m verify.linear_gd``)."""
    try:
        args = build_parser().parse_args(argv)
    except ArgError as e:
        print(f"python -m verify linear-gd: error: {e}", file=sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run on parsed arguments: 0 when every check passes, 1 otherwise, 2 (one line) for bad arguments."""
    try:
        _check_output(args.json, "--json")
        _check_output(args.plot, "--plot", (".png", ".pdf", ".svg"))
        if args.law_iters < args.iters:
            raise ArgError(f"argument --law-iters: expected an integer >= --iters={args.iters}, got {args.law_iters}")
        if any(int(round(r * args.d)) <= args.d for r in args.ratios):
            raise ArgError(f"argument --ratios: every n/d must give N > d={args.d} samples, got {args.ratios}")
        device = _device(args.device)
    except ArgError as e:
        print(f"python -m verify linear-gd: error: {e}", file=sys.stderr)
        return 2
    config = dict(algorithm="linear-gd", N=args.N, d=args.d, iters=args.iters, problems=args.problems, seed=args.seed,
                  dtypes=args.dtype, device=device, attention=args.attention, ratios=args.ratios,
                  law_iters=args.law_iters, step_scale=args.step_scale, torch=torch.__version__)
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in config.items()), flush=True)
    with np.errstate(over="ignore", invalid="ignore"):
        eta, rows = step_rows(args, device)
        groups = law_groups(args, device)
    config["eta"] = eta
    lines, ok = verdict(rows, groups, args)
    if not args.quiet:
        print(f"step comparison at N={args.N}, d={args.d}, T={args.iters}, eta={eta:.4g} (errors relative, max over problems):")
        print(format_step(rows))
        print(f"law (median over {args.problems} problems per n/d, T={args.iters} for the @T columns, {args.law_iters} loops):")
        print(format_law(groups, args.iters))
    print("verdict:")
    for line in lines:
        print("  " + line)
    if args.json:
        plain = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in g.items() if k != "curves"}
                 | {"curves": {k: v.tolist() for k, v in g["curves"].items()}} for g in groups]
        with open(args.json, "w") as f:
            json.dump({"config": config, "step": rows, "law": plain, "verdict": lines, "ok": ok}, f, indent=1)
    if args.plot:
        law.write_law_plot(args.plot, groups, args.iters,
                           f"linear looped GD: d={args.d}, {args.problems} problems per n/d, eta={args.step_scale:g}/lambda_max, "
                           f"{args.attention} path")
    return 0 if ok else 1


LINEAR_GD = Command("linear-gd", SUMMARY, add_arguments, run)
