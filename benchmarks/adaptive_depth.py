"""Error against loops used: trained adaptive-depth runs, numpy GD / Newton and the constructed
AlgoFormer that halts on convergence, all on the prompts of ``python -m algoformer.evaluate``.

    python benchmarks/adaptive_depth.py RUN [RUN ...] --out DIR [--seed 12345 --batch 256]
        [--tols 0.3,0.1,0.03,0.01,0.003,0.001] [--max-loops 200]

The trained runs are evaluated by ``algoformer.evaluate.evaluate`` (its eval.json and loops_used.png
land in DIR). The same prompts (same seed and batch) are then re-encoded for the constructions, with
the first N - 1 samples as context and x_N as the query (the position every curve of the figure reads):

    linear          Lemma A.2's GD AlgoFormer and Theorem 4.1's Newton AlgoFormer with the convergence
                    gadget (``constructions.halting``), one point per tolerance
    representation  Theorem 3.1's AlgoFormer (Phi* = the task's own Phi* in TF_pre, GD on Phi*(x) in
                    the loop) with the same gadget on its iterate register r

float64, ``forward_halting``; x = the mean loops used, y = the squared error at x_N. The numpy curves
are redrawn up to the constructions' largest loop count. Writes DIR/adaptive_depth.png and
DIR/adaptive_depth.json. Bad arguments exit 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from algoformer import adaptive_eval, evaluate as ev
from algoformer.tasks import Regression
from constructions.bridge import build_model
from constructions.halting import GD_OFF, gd_halting, newton_halting, with_halting
from constructions.linearise import DEFAULT_VARIANT
from constructions.representation import representation_construction
from verify.algorithms import GD, NEWTON, Options
from verify.sweep import auto_temps, precision


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def _floats(s: str) -> tuple[float, ...]:
    try:
        v = tuple(float(t) for t in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated floats > 0, got {s!r}") from None
    if not all(0 < t < float("inf") for t in v):
        raise argparse.ArgumentTypeError(f"expected comma-separated floats > 0, got {s!r}")
    return v


def problems(prompt) -> Regression:
    """The evaluation prompts as constructions read them: samples 1..N-1 as context, x_N the query."""
    x, y = prompt.x.astype(np.float64), prompt.y.astype(np.float64)
    return Regression(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1])


def constructed(task: str, phi, p: Regression, tols, max_loops: int) -> dict:
    """label -> {"loops", "error", "tol", ...}: one point per tolerance (module docstring)."""
    B, N, d, _ = p.sizes
    opts, n = Options(N=N, d=d, problems=B), 2 * N + 2
    prec = precision("float64")
    builds = {}
    if task == "linear":
        eta, alpha = GD.choose_step(p), NEWTON.choose_step(p)
        t_gd = auto_temps(DEFAULT_VARIANT, n, GD.score_bounds(p, eta), "float64")
        t_nt = auto_temps(DEFAULT_VARIANT, n, NEWTON.score_bounds(p, alpha), "float64")
        builds["constructed GD, halting"] = (lambda tol: gd_halting(GD.build(opts, eta, t_gd, DEFAULT_VARIANT), tol),
                                             GD.violations(p, opts, eta), f"eta={eta:.4g}")
        builds["constructed Newton, halting"] = (lambda tol: newton_halting(NEWTON.build(opts, alpha, t_nt,
                                                                                          DEFAULT_VARIANT), tol),
                                                 NEWTON.violations(p, opts, alpha), f"alpha={alpha:.4g}")
    else:
        fx, ft = phi(p.x), phi(p.x_test)
        lmax = np.linalg.eigvalsh(np.einsum("bni,bnj->bij", fx, fx) / N)[:, -1]
        eta = float(1.0 / lmax.max())
        pts = np.concatenate([fx, ft[:, None]], axis=1)
        temps = auto_temps(DEFAULT_VARIANT, n, {"loop": float(np.abs(np.einsum("bni,bmi->bnm", pts, fx)).max() / N)},
                           "float64")
        big = np.maximum(np.abs(fx).max(axis=(1, 2)), np.abs(ft).max(axis=1)) > opts.x_bound
        con = lambda: representation_construction(phi, N, eta, temps["loop"], 1, DEFAULT_VARIANT, opts.x_bound)
        builds["constructed Thm 3.1 (Phi*, GD), halting"] = (lambda tol: with_halting(con(), tol, GD_OFF, n),
                                                              np.where(big, "max|Phi*(x)| > x_bound", ""), f"eta={eta:.4g}")
    out = {}
    for label, (build, why, step) in builds.items():
        keep = why == ""
        rows = []
        for tol in tols:
            hc = build(tol)
            c = hc.construction
            model = build_model(c.weights, dtype=prec.storage, attention_dtype=prec.attention)
            tokens = torch.from_numpy(c.encode(p.x[keep], p.y[keep], p.x_test[keep])).to(prec.storage)
            with torch.no_grad():
                res = model.forward_halting(tokens, hc.rule, max_loops)
            pred = c.answer.read(c.layout, res.output).double().numpy().reshape(int(keep.sum()), -1)
            err = ((pred - p.y_test[keep]) ** 2).mean(-1)
            rows.append({"tol": tol, "mean_loops": float(res.loops.double().mean()),
                         "max_loops": int(res.loops.max()), "error": float(err.mean()),
                         "finite": bool(np.isfinite(pred).all())})
        out[label] = {"step": step, "problems": int(keep.sum()), "excluded": int((~keep).sum()),
                      "loops": [r["mean_loops"] for r in rows], "error": [r["error"] for r in rows], "rows": rows}
    return out


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python benchmarks/adaptive_depth.py", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="trained run directories (one task)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=12345, help="prompt seed (default: 12345, evaluate's)")
    p.add_argument("--batch", type=int, default=256, help="evaluation prompts (default: 256)")
    p.add_argument("--tols", type=_floats, default=(0.3, 0.1, 0.03, 0.01, 0.003, 0.001),
                   help="halting tolerances of the constructions (default: 0.3,0.1,0.03,0.01,0.003,0.001)")
    p.add_argument("--max-loops", type=int, default=200, help="cap of the halting loop (default: 200)")
    try:
        args = p.parse_args(argv)
        for name in ("batch", "max_loops"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: expected an integer >= 1")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out={args.out!r} is invalid: it exists and is not a directory")
        result = ev.evaluate(args.runs, args.out, args.batch, 50, args.seed)
    except UsageError as e:
        print(f"adaptive_depth: error: {e}", file=sys.stderr)
        return 2
    except ev.UsageError as e:
        print(f"adaptive_depth: error: {e}", file=sys.stderr)
        return 2
    run = ev.open_run(args.runs[0])
    task = run.cfg.task_spec()
    print(f"adaptive_depth: task={task.name} d={task.d} N={run.cfg.n_points} batch={args.batch} seed={args.seed} "
          f"dtype=float64 (constructions) / float32 (trained) tols={args.tols} max_loops={args.max_loops}", flush=True)
    prompt = task.sample(np.random.default_rng(args.seed), args.batch, run.cfg.n_points)
    cons = constructed(task.name, task.phi, problems(prompt), args.tols, args.max_loops)
    lu = result["loops_used"]
    k = max([int(np.ceil(max(c["loops"]))) for c in cons.values()] + [max(r["T"] for r in lu["runs"].values())])
    lu["numpy"] = adaptive_eval.numpy_curves(prompt, k, task.phi if task.name == "representation" else None)
    adaptive_eval.plot(lu, out / "adaptive_depth.png", f"{task.name} (d={task.d}, N={run.cfg.n_points}): "
                       "error against loops used", extra=cons)
    (out / "adaptive_depth.json").write_text(json.dumps({"loops_used": lu, "constructed": cons,
                                                         "tols": args.tols, "seed": args.seed,
                                                         "batch": args.batch}, indent=1))
    for label, c in cons.items():
        for r in c["rows"]:
            print(f"{label} ({c['step']}, {c['problems']} problems): tol={r['tol']:g} loops {r['mean_loops']:.1f} "
                  f"(max {r['max_loops']}) error {r['error']:.4g}")
    for name, c in lu["runs"].items():
        print(f"{name}: fixed t=1..T {['%.3g' % e for e in c['fixed']['error']]}")
        for r in c.get("thresholds", []):
            print(f"  ouro q={r['threshold']:g}: loops {r['mean_loops']:.2f} error {r['error']:.4g}")
        if "budgets" in c:
            print(f"  budgets L=1..T {['%.3g' % e for e in c['budgets']['error']]}")
    for name, c in lu["numpy"].items():
        print(f"numpy {name}: k=1..6 {['%.3g' % e for e in c['error'][:6]]}; k={k} {c['error'][-1]:.3g}")
    print(f"predict zero: {lu['zero']:.4g}")
    print(f"wrote adaptive_depth.png, adaptive_depth.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
