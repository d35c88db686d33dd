"""Evaluate trained runs and the numpy baselines through one code path, and draw the paper's plots.

    python -m algoformer.evaluate runs/rep-algo runs/rep-std runs/rep-loop --out figs/rep

Every run must be trained on the same task (same task, d, noise, Phi* seed). All predictors (trained
models and, for regression tasks, least squares / GD / Newton) see the same prompts. Writes:

    fig2_samples.png   error against the number of in-context samples, one curve per predictor (Fig. 2)
    fig3_loops.png     error against the loop iteration, far beyond the trained T (Fig. 3)
    fig5_baselines.png AlgoFormer against k steps of GD and Newton (Fig. 5; regression tasks only)
    eval.json          the curves, the figures written and, one line each, what was not drawn and why

Runs initialised from a construction (``train --init-from``) are rebuilt through the same plug-in
(``training.initialisers``: the encoder and the algorithm its loop emulates come from the run's
config) and read the same task prompts re-encoded in the construction's own format; their errors are
matched to the baselines by sample index. A construction that answers at every x_i (gd, the decoder)
has a curve in every figure. An encoder construction (newton, representation) is built for N - 1
context samples and answers once, at x_N: it has no curve against the number of samples, so Fig. 2
and Fig. 5 leave it out and say so in one line, and its error at x_N is printed and stored
(``answers``). In Fig. 3 every initialised run is drawn with the numpy algorithm its loop emulates,
with the construction's own step, on the same prompts (``per_loop_reference``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import adaptive, adaptive_eval
from .training import baselines, checkpoint, initialisers
from .training.config import MAX_LOOPS, SEED_MAX, TrainConfig
from .training.guards import (Progress, UsageError, check_device, check_folder, check_memory, dumps,
                              is_out_of_memory, make_folder, one_line)
from .training.figures import BASELINE_STEPS, drawable, plots
from .training.models import build_model
from .training.prompts import Prompt



PROG = "python -m algoformer.evaluate"
MAX_BATCH = 1_000_000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("runs", nargs="+", help="run folders written by algoformer.train (config.json and ckpt.pt), "
                   "all on the same task")
    p.add_argument("--out", default=None, help="folder of the figures and eval.json, created with its parents; "
                   "existing figures there are replaced (default: the first run's folder)")
    p.add_argument("--batch", type=int, default=256, help=f"evaluation prompts, an integer in [1, {MAX_BATCH}] "
                   "(checked against the memory available) (default: %(default)s)")
    p.add_argument("--max-loops", type=int, default=200, help=f"loops of the Fig. 3 curve, an integer in "
                   f"[1, {MAX_LOOPS}] (the bound of train's --T and verify's --iters) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the evaluation prompts, an integer in "
                   "[0, 2**64 - 1] (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="check the arguments, the runs and --out, print the "
                   "configuration, and exit without evaluating or writing (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: off)")
    p.add_argument("--thresholds", type=_thresholds, default=adaptive_eval.DEFAULT_THRESHOLDS,
                   help="exit thresholds q of --adaptive ouro runs in loops_used.png, comma-separated floats "
                        f"in (0, 1] (default: {','.join(map(str, adaptive_eval.DEFAULT_THRESHOLDS))})")
    return p


def _thresholds(s: str) -> tuple[float, ...]:
    try:
        qs = tuple(float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated floats in (0, 1], got {s!r}") from None
    if not all(0 < q <= 1 for q in qs):
        raise argparse.ArgumentTypeError(f"expected comma-separated floats in (0, 1], got {s!r}")
    return qs


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before any run is opened; raises UsageError."""
    for flag, v, lo, hi in (("--batch", args.batch, 1, MAX_BATCH), ("--max-loops", args.max_loops, 1, MAX_LOOPS),
                            ("--seed", args.seed, 0, SEED_MAX)):
        if not lo <= v <= hi:
            raise UsageError(f"{flag}={v} is invalid: expected an integer in [{lo}, "
                             f"{'2**64 - 1' if hi == SEED_MAX else hi}]")
    args.device = check_device(args.device)
    for r in args.runs:
        if not Path(r).is_dir():
            raise UsageError(f"run={r!r} is invalid: " + ("it is a file, expected a run folder" if Path(r).exists()
                                                         else "no such folder"))
    check_folder(args.out if args.out is not None else args.runs[0], "--out")


@dataclass
class Run:
    name: str
    cfg: TrainConfig
    model: torch.nn.Module                          # eval mode, the checkpoint's weights
    step: int
    init: initialisers.Initialised | None = None    # runs from a construction: encoder and reference

    def encode(self, prompt: Prompt) -> Prompt:
        return prompt if self.init is None else self.init.encode(prompt)


def open_run(run: str | Path, device: str = "cpu") -> Run:
    """A trained run rebuilt from its checkpoint: from scratch through ``build_model``, from a
    construction through the same initialiser plug-in as ``train`` (the encoder is fixed, the weights
    are the checkpoint's)."""
    run = Path(run)
    if not (run / "ckpt.pt").exists():
        raise UsageError(f"run={str(run)!r} is invalid: no ckpt.pt in it")
    try:                                            # never unpickles code (docs/run-folders.md)
        ckpt = checkpoint.load(run / "ckpt.pt")
        cfg = TrainConfig.from_dict(ckpt["config"])
        init = initialisers.load(cfg.init_from).build(cfg) if cfg.init_from is not None else None
        task = cfg.task_spec()
        model = init.model if init is not None else \
            build_model(cfg.model_spec(), cfg.d, task.d_out, task.n_tokens(cfg.n_points))
        adaptive.attach(model, cfg.adaptive, cfg.train_loops)   # its gate / conditioning: in the state dict
        checkpoint.restore(run / "ckpt.pt", ckpt, model)    # names, shapes checked against the config
    except checkpoint.CheckpointError as e:
        raise UsageError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise UsageError(f"run={str(run)!r} is invalid: {e}") from None
    return Run(run.name or str(run), cfg, model.to(device).eval(), ckpt["step"], init)


def load_run(run: str | Path, device: str = "cpu") -> tuple[TrainConfig, torch.nn.Module, int]:
    """(config, model in eval mode, step) of a trained run (a run from a construction reads the
    construction's encoding: ``open_run(run).encode``)."""
    r = open_run(run, device)
    return r.cfg, r.model, r.step


def predictors(runs: list[tuple[str, TrainConfig, torch.nn.Module]], with_baselines: bool, device: str) -> dict:
    """Name -> predictor, all with the signature predictor(prompt) -> (B, n, o)."""
    preds = {name: baselines.ModelPredictor(model, cfg.train_loops, device) for name, cfg, model in runs}
    preds["zero"] = baselines.zero
    if with_baselines:
        preds["least squares"] = baselines.least_squares
        for k in BASELINE_STEPS:
            preds[f"GD k={k}"] = baselines.gd(k)
            preds[f"Newton k={k}"] = baselines.newton(k)
    return preds


def _reference_label(ref: initialisers.Reference) -> str:
    step = "alpha" if ref.algorithm == "newton" else "eta"
    return f"numpy {ref.algorithm}{' on Phi*(x)' if ref.features == 'phi' else ''} ({step}={ref.step:.4g})"


def _unique_names(runs: list[Run], dirs: list[str], reserved: set[str]) -> None:
    """A run is named by its folder; where two share a name (or one is a baseline's), by its path."""
    names = [r.name for r in runs]
    for r, d in zip(runs, dirs):
        if names.count(r.name) > 1 or r.name in reserved:
            r.name = str(Path(d))
    seen = [r.name for r in runs]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup is not None:
        raise UsageError(f"run={dup!r} is invalid: the same run folder is given twice")


@torch.no_grad()
def loop_errors(model: torch.nn.Module, prompt: Prompt, max_loops: int, scored: np.ndarray, device: str,
                tick) -> list[float]:
    """Mean square error over the scored samples after t = 0..max_loops loops (Fig. 3), one loop at a
    time (the same operations as ``forward_each_loop``, without holding every loop's output)."""
    model.eval()
    x = torch.as_tensor(prompt.tokens, device=device)
    h = model.run_pre(model.embed(x))
    e = h if model.cfg.input_injection else None
    err = lambda h: float(baselines.per_sample_error(model.run_post(h).float().cpu().numpy(), prompt)[scored].mean())
    out = [err(h)]
    for t in range(1, max_loops + 1):
        h = model.run_loop(h, t, e)
        out.append(err(h))
        tick(f"loop {t}/{max_loops}")
    return out


def _check_memory(runs: list[Run], batch: int, max_loops: int, device: str) -> None:
    for r in runs:
        n = r.cfg.task_spec().n_tokens(r.cfg.n_points) if r.init is None else 2 * r.cfg.n_points + 2
        width = r.cfg.width
        check_memory(batch * n * width * 4, device, f"a forward pass of run {r.name!r} ({batch} prompts x {n} "
                     f"tokens x width {width}, float32)", "--batch", batch)
        if r.init is not None and r.init.reference is not None:
            check_memory((max_loops + 1) * batch * 2 * r.cfg.n_points * 8, "cpu", f"the numpy reference of run "
                         f"{r.name!r} ({max_loops + 1} loops x {batch} prompts x {2 * r.cfg.n_points} tokens, "
                         "float64)", "--max-loops", max_loops)


def evaluate(run_dirs: list[str], out: str | None = None, batch: int = 256, max_loops: int = 200,
             seed: int = 12345, device: str = "cpu", dry_run: bool = False, quiet: bool = False,
             thresholds=adaptive_eval.DEFAULT_THRESHOLDS) -> dict:
    """Evaluate the runs and write the figures and eval.json in ``out`` (default: the first run's
    folder). Checks --out, the runs and the memory before any work; ``dry_run``: the checks and the
    configuration line only."""
    out_dir = check_folder(out if out is not None else run_dirs[0], "--out")
    runs = [open_run(r, device) for r in run_dirs]
    cfg0 = runs[0].cfg
    keys = ("task", "d", "noise", "phi_seed")
    for r in runs[1:]:
        for k in keys:
            if getattr(r.cfg, k) != getattr(cfg0, k):
                raise UsageError(f"run {r.name!r} has {k}={getattr(r.cfg, k)!r}, the first run {getattr(cfg0, k)!r}")
    for r in runs:
        if r.init is not None and r.cfg.n_points != cfg0.n_points:
            raise UsageError(f"run {r.name!r} has n_points={r.cfg.n_points!r}, the first run {cfg0.n_points!r} "
                             f"(a run initialised from a construction is evaluated at the n_points it was built for)")
    task = cfg0.task_spec()
    regression = cfg0.task in ("linear", "representation")
    baseline_names = set(predictors([], regression, device))
    _unique_names(runs, run_dirs, baseline_names)
    _check_memory(runs, batch, max_loops, device)
    print(f"algoformer.evaluate: task={cfg0.task} d={cfg0.d} N={cfg0.n_points} runs={', '.join(r.name for r in runs)} "
          f"batch={batch} max_loops={max_loops} seed={seed} device={device} dtype=float32 (baselines float64) "
          f"out={out_dir}" + (" dry run (nothing written)" if dry_run else ""), flush=True)
    if dry_run:
        return {"dry_run": True, "runs": [r.name for r in runs], "out": str(out_dir)}
    looped = [r for r in runs if r.cfg.train_loops]
    refs = [r for r in looped if r.init is not None and r.init.reference is not None and regression]
    bar = Progress(len(runs) + max_loops * (len(looped) + len(refs)) + len(baseline_names), "algoformer.evaluate",
                   disabled=quiet)
    prompt = task.sample(np.random.default_rng(seed), batch, cfg0.n_points)
    every = baselines.scored_samples(prompt)

    curves, answers, loop_curves, references = {}, {}, {}, {}
    for r in runs:
        enc = r.encode(prompt)
        scored = baselines.scored_samples(enc)
        model = baselines.ModelPredictor(r.model, r.cfg.train_loops, device)
        err = baselines.per_sample_error(model(enc), enc)
        bar.update(1, f"run {r.name!r}: after T loops")
        if np.array_equal(scored, every):
            curves[r.name] = err.tolist()
        else:
            answers[r.name] = {int(s): float(err[s]) for s in scored}
        if r.cfg.train_loops:
            loop_curves[r.name] = loop_errors(r.model, enc, max_loops, scored, device,
                                              lambda what, n=r.name: bar.update(1, f"run {n!r}: {what}"))
        if r in refs:
            ref = r.init.reference
            path = baselines.each_step(ref.algorithm, max_loops, ref.step,
                                       task.phi if ref.features == "phi" else None, scored)(prompt)
            per = baselines.per_sample_error(path, prompt)                        # (max_loops + 1, N)
            references[r.name] = {"label": _reference_label(ref), "algorithm": ref.algorithm, "step": ref.step,
                                  "features": ref.features, "per_loop": per[:, scored].mean(-1).tolist(),
                                  "at_T": {int(s): float(per[min(r.cfg.train_loops, max_loops), s]) for s in scored}}
            bar.update(max_loops, f"run {r.name!r}: numpy {ref.algorithm}")
    for name, p in predictors([], regression, device).items():
        curves[name] = baselines.per_sample_error(p(prompt), prompt).tolist()
        bar.update(1, name)
    bar.close()

    not_drawn = {}
    for fig in ("fig2_samples.png",) + (("fig5_baselines.png",) if regression else ()):
        lines = [f"{fig}: run {name!r} not drawn: the {next(r for r in runs if r.name == name).cfg.init_from} "
                 f"construction answers only at x_N, after {', '.join(map(str, a))} in-context samples (an "
                 f"encoder built for that N): one point, no curve against the number of samples"
                 for name, a in answers.items()]
        if not any(r.name in curves for r in runs):
            lines.append(f"{fig}: not written: no run answers at every in-context sample")
        if lines:
            not_drawn[fig] = lines
    fig3 = [f"fig3_loops.png: run {r.name!r} not drawn: the {r.cfg.model} transformer has no loop"
            for r in runs if not r.cfg.train_loops]
    if fig3 and not loop_curves:
        fig3.append("fig3_loops.png: not written: no run has a loop")
    fig3 += [f"fig3_loops.png: run {n!r} not drawn: its errors are not finite (NaN or inf: the model diverged)"
             for n, c in loop_curves.items() if not drawable(c)]
    if fig3:
        not_drawn["fig3_loops.png"] = fig3
    for fig in ("fig2_samples.png",) + (("fig5_baselines.png",) if regression else ()):
        not_drawn[fig] = not_drawn.get(fig, []) + [
            f"{fig}: run {n!r} not drawn: its errors are not finite (NaN or inf: the model diverged)"
            for n in curves if n in {r.name for r in runs} and not drawable(curves[n])]
        if not not_drawn[fig]:
            del not_drawn[fig]

    make_folder(out_dir, "--out")
    result = {"task": cfg0.task, "n_points": cfg0.n_points, "batch": batch, "seed": seed,
              "per_sample": curves, "answers": answers, "per_loop": loop_curves, "per_loop_reference": references,
              "trained_T": {r.name: r.cfg.train_loops for r in runs},
              "init_from": {r.name: r.cfg.init_from for r in runs}, "not_drawn": not_drawn}
    result["figures"] = plots(result, [r.name for r in runs], out_dir, regression)
    result["loops_used"] = adaptive_eval.loops_used(runs, prompt, thresholds, device)
    if result["loops_used"]["runs"]:
        adaptive_eval.plot(result["loops_used"], out_dir / "loops_used.png",
                           f"{cfg0.task}: error against loops used")
        result["figures"].append("loops_used.png")
    (out_dir / "eval.json").write_text(dumps(result, indent=1))     # NaN / inf as null
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        result = evaluate(args.runs, args.out, args.batch, args.max_loops, args.seed, args.device,
                          dry_run=args.dry_run, quiet=args.quiet, thresholds=args.thresholds)
    except UsageError as e:
        print(f"algoformer.evaluate: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("algoformer.evaluate: interrupted (SIGINT): eval.json and the figures not written", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        print(f"algoformer.evaluate: error: out of memory (--batch={args.batch}, --max-loops={args.max_loops}): "
              "lower --batch", file=sys.stderr)
        return 2
    if result.get("dry_run"):
        return 0
    for name, c in result["per_sample"].items():
        print(f"{name:>16}: error at sample 1 {c[1]:.4g}, at sample {len(c) - 1} {c[-1]:.4g}")
    for name, a in result["answers"].items():
        ref = result["per_loop_reference"].get(name, {}).get("at_T", {})
        for s, e in a.items():
            also = f" ({result['per_loop_reference'][name]['label']} k=T: {ref[s]:.4g})" if s in ref else ""
            print(f"{name:>16}: error at x_N (after {s} in-context samples), T={result['trained_T'][name]} loops: "
                  f"{e:.4g}{also}")
    for name, c in result["per_loop"].items():
        T, ref = result["trained_T"][name], result["per_loop_reference"].get(name)
        line = f"{name:>16}: per loop: T={T} {c[min(T, len(c) - 1)]:.4g}, loop {len(c) - 1} {c[-1]:.4g}"
        if ref is not None:
            r = ref["per_loop"]
            line += f"; {ref['label']}: k={T} {r[min(T, len(r) - 1)]:.4g}, k={len(r) - 1} {r[-1]:.4g}"
        print(line)
    for lines in result["not_drawn"].values():
        for line in lines:
            print(line)
    print(f"wrote {', '.join(result['figures'] + ['eval.json'])} in {args.out or args.runs[0]}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
