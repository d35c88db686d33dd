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
from .training.config import TrainConfig
from .training.models import build_model
from .training.prompts import Prompt

BASELINE_STEPS = (5, 10, 15, 20)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m algoformer.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (holding config.json and ckpt.pt)")
    p.add_argument("--out", default=None, help="figure directory (default: the first run's)")
    p.add_argument("--batch", type=int, default=256, help="evaluation prompts")
    p.add_argument("--max-loops", type=int, default=200, help="loops for the Fig. 3 curve")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--device", default="cpu")
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
    ckpt = checkpoint.load(run / "ckpt.pt")
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
        init = initialisers.load(cfg.init_from).build(cfg) if cfg.init_from is not None else None
    except ValueError as e:
        raise UsageError(f"run={str(run)!r} is invalid: {e}") from None
    task = cfg.task_spec()
    model = init.model if init is not None else \
        build_model(cfg.model_spec(), cfg.d, task.d_out, task.n_tokens(cfg.n_points))
    adaptive.attach(model, cfg.adaptive, cfg.train_loops)
    model.load_state_dict(ckpt["model"])
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


def evaluate(run_dirs: list[str], out: str | None = None, batch: int = 256, max_loops: int = 200,
             seed: int = 12345, device: str = "cpu", thresholds=adaptive_eval.DEFAULT_THRESHOLDS) -> dict:
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
    prompt = task.sample(np.random.default_rng(seed), batch, cfg0.n_points)
    regression = prompt.x is not None
    every = baselines.scored_samples(prompt)

    curves, answers, loop_curves, references = {}, {}, {}, {}
    for r in runs:
        enc = r.encode(prompt)
        scored = baselines.scored_samples(enc)
        model = baselines.ModelPredictor(r.model, r.cfg.train_loops, device)
        err = baselines.per_sample_error(model(enc), enc)
        if np.array_equal(scored, every):
            curves[r.name] = err.tolist()
        else:
            answers[r.name] = {int(s): float(err[s]) for s in scored}
        if r.cfg.train_loops:
            each = model.each_loop(enc, max_loops)
            loop_curves[r.name] = baselines.per_sample_error(each, enc)[:, scored].mean(-1).tolist()
        ref = r.init.reference if r.init is not None else None
        if ref is not None and regression:
            path = baselines.each_step(ref.algorithm, max_loops, ref.step,
                                       task.phi if ref.features == "phi" else None, scored)(prompt)
            per = baselines.per_sample_error(path, prompt)                        # (max_loops + 1, N)
            references[r.name] = {"label": _reference_label(ref), "algorithm": ref.algorithm, "step": ref.step,
                                  "features": ref.features, "per_loop": per[:, scored].mean(-1).tolist(),
                                  "at_T": {int(s): float(per[min(r.cfg.train_loops, max_loops), s]) for s in scored}}
    curves.update({name: baselines.per_sample_error(p(prompt), prompt).tolist()
                   for name, p in predictors([], regression, device).items()})

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

    out_dir = Path(out or run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"task": cfg0.task, "n_points": cfg0.n_points, "batch": batch, "seed": seed,
              "per_sample": curves, "answers": answers, "per_loop": loop_curves, "per_loop_reference": references,
              "trained_T": {r.name: r.cfg.train_loops for r in runs},
              "init_from": {r.name: r.cfg.init_from for r in runs}, "not_drawn": not_drawn}
    result["figures"] = _plots(result, [r.name for r in runs], out_dir, regression)
    result["loops_used"] = adaptive_eval.loops_used(runs, prompt, thresholds, device)
    if result["loops_used"]["runs"]:
        adaptive_eval.plot(result["loops_used"], out_dir / "loops_used.png",
                           f"{cfg0.task}: error against loops used")
        result["figures"].append("loops_used.png")
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return result


def _plots(result: dict, run_names: list[str], out: Path, regression: bool) -> list[str]:
    """Draws the figures that the result supports; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curve_runs = [n for n in run_names if n in result["per_sample"]]

    def samples_plot(names, path, title):
        fig, ax = plt.subplots(figsize=(6, 4))
        for n in names:
            c = result["per_sample"][n]
            ax.plot(range(len(c)), c, label=n, ls="--" if n not in run_names else "-")
        ax.set(yscale="log", xlabel="in-context samples", ylabel="square error", title=title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)

    if curve_runs:
        samples_plot(curve_runs + ["zero"] + (["least squares"] if regression else []), out / "fig2_samples.png",
                     f"{result['task']}: error against in-context samples (Fig. 2)")
    if result["per_loop"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = set()                                  # runs of one construction share their reference
        for n, c in result["per_loop"].items():
            line, = ax.plot(range(len(c)), c, label=f"{n} (trained T={result['trained_T'][n]})")
            ref = result["per_loop_reference"].get(n)
            if ref is not None and (ref["label"], tuple(ref["per_loop"])) not in drawn:
                drawn.add((ref["label"], tuple(ref["per_loop"])))
                ax.plot(range(len(ref["per_loop"])), ref["per_loop"], ls="--", color=line.get_color(),
                        label=f"{ref['label']}, same prompts")
                ax.axvline(result["trained_T"][n], color=line.get_color(), ls=":", lw=0.8)
        ax.set(xlabel="loop iteration", ylabel="square error", yscale="log",
               title=f"{result['task']}: error against loop iteration (Fig. 3)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fig3_loops.png", dpi=120)
        plt.close(fig)
        written.append("fig3_loops.png")
    if regression and curve_runs:
        base = [f"{m} k={k}" for m in ("Newton", "GD") for k in BASELINE_STEPS]
        samples_plot(curve_runs + base, out / "fig5_baselines.png",
                     f"{result['task']}: trained models against GD and Newton (Fig. 5)")
    return written


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for name in ("batch", "max_loops"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: expected an integer >= 1")
        result = evaluate(args.runs, args.out, args.batch, args.max_loops, args.seed, args.device,
                          args.thresholds)
    except UsageError as e:
        print(f"algoformer.evaluate: error: {e}", file=sys.stderr)
        return 2
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
