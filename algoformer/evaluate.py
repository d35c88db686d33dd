"""Evaluate trained runs and the numpy baselines through one code path, and draw the paper's plots.

    python -m algoformer.evaluate runs/rep-algo runs/rep-std runs/rep-loop --out figs/rep

Every run must be trained on the same task (same task, d, noise, Phi* seed). All predictors (trained
models and, for regression tasks, least squares / GD / Newton) see the same prompts. Writes:

    fig2_samples.png   error against the number of in-context samples, one curve per predictor (Fig. 2)
    fig3_loops.png     error against the loop iteration, far beyond the trained T (Fig. 3)
    fig5_baselines.png AlgoFormer against k steps of GD and Newton (Fig. 5; regression tasks only)
    eval.json          the curves
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .training import baselines, checkpoint
from .training.config import TrainConfig
from .training.models import build_model

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
    return p


def load_run(run: str | Path, device: str = "cpu") -> tuple[TrainConfig, torch.nn.Module, int]:
    """(config, model in eval mode, step) of a trained run."""
    run = Path(run)
    if not (run / "ckpt.pt").exists():
        raise UsageError(f"run={str(run)!r} is invalid: no ckpt.pt in it")
    ckpt = checkpoint.load(run / "ckpt.pt")
    cfg = TrainConfig.from_dict(ckpt["config"])
    if cfg.init_from is not None:
        raise UsageError(f"run={str(run)!r} is invalid: it was initialised from the {cfg.init_from} construction "
                         "(its prompts are the construction's encoding), which evaluate does not support yet")
    task = cfg.task_spec()
    model = build_model(cfg.model_spec(), cfg.d, task.d_out, task.n_tokens(cfg.n_points))
    model.load_state_dict(ckpt["model"])
    return cfg, model.to(device).eval(), ckpt["step"]


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


def evaluate(run_dirs: list[str], out: str | None = None, batch: int = 256, max_loops: int = 200,
             seed: int = 12345, device: str = "cpu") -> dict:
    loaded = [(Path(r).name or str(r), *load_run(r, device)[:2]) for r in run_dirs]
    cfg0 = loaded[0][1]
    keys = ("task", "d", "noise", "phi_seed")
    for name, cfg, _ in loaded[1:]:
        for k in keys:
            if getattr(cfg, k) != getattr(cfg0, k):
                raise UsageError(f"run {name!r} has {k}={getattr(cfg, k)!r}, the first run {getattr(cfg0, k)!r}")
    task = cfg0.task_spec()
    prompt = task.sample(np.random.default_rng(seed), batch, cfg0.n_points)
    regression = prompt.x is not None

    curves = {name: baselines.per_sample_error(p(prompt), prompt).tolist()
              for name, p in predictors(loaded, regression, device).items()}
    loop_curves = {}
    for name, cfg, model in loaded:
        if cfg.train_loops:
            each = baselines.ModelPredictor(model, cfg.train_loops, device).each_loop(prompt, max_loops)
            loop_curves[name] = baselines.per_sample_error(each, prompt).mean(-1).tolist()   # (max_loops + 1,)

    out_dir = Path(out or run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"task": cfg0.task, "n_points": cfg0.n_points, "batch": batch, "seed": seed,
              "per_sample": curves, "per_loop": loop_curves,
              "trained_T": {name: cfg.train_loops for name, cfg, _ in loaded}}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    _plots(result, [n for n, _, _ in loaded], out_dir, regression)
    return result


def _plots(result: dict, run_names: list[str], out: Path, regression: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

    samples_plot(run_names + ["zero"] + (["least squares"] if regression else []), out / "fig2_samples.png",
                 f"{result['task']}: error against in-context samples (Fig. 2)")
    if result["per_loop"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for n, c in result["per_loop"].items():
            ax.plot(range(len(c)), c, label=f"{n} (trained T={result['trained_T'][n]})")
        ax.set(xlabel="loop iteration", ylabel="square error", yscale="log",
               title=f"{result['task']}: error against loop iteration (Fig. 3)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fig3_loops.png", dpi=120)
        plt.close(fig)
    if regression:
        base = [f"{m} k={k}" for m in ("Newton", "GD") for k in BASELINE_STEPS]
        samples_plot(run_names + base, out / "fig5_baselines.png",
                     f"{result['task']}: trained models against GD and Newton (Fig. 5)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for name in ("batch", "max_loops"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: expected an integer >= 1")
        result = evaluate(args.runs, args.out, args.batch, args.max_loops, args.seed, args.device)
    except UsageError as e:
        print(f"algoformer.evaluate: error: {e}", file=sys.stderr)
        return 2
    for name, c in result["per_sample"].items():
        print(f"{name:>16}: error at sample 1 {c[1]:.4g}, at sample {len(c) - 1} {c[-1]:.4g}")
    print(f"figures and eval.json in {args.out or args.runs[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
