"""Error against loops used (compute), for ``python -m algoformer.evaluate`` (``loops_used.png``).

All curves read the error at the prompt's *last scored sample* (regression: y_N predicted at x_N from
the N - 1 samples before it), averaged over the evaluation batch, on the same prompts:

    fixed-T model       the output after t = 1..max(T) loops (the loop's own trajectory)
    ouro                the threshold rule at each q (``algoformer.adaptive.ouro_run``): x = the mean
                        loops used over the batch; and the gate-free exit at every fixed t = 1..T
    loopformer          budget L = 1..T: L loops of step 1/L (x = L)
    numpy GD, Newton    k = 1..max(T) steps on the same N - 1 samples (``training.baselines``, float64,
                        per-problem step 1/lambda_max and alpha = 1/lambda_max^2); for regression with
                        representation also on Phi*(x), the features Theorem 3.1's loop regresses on

Runs initialised from a construction read another prompt format and are left out of this figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .adaptive import answer_position, ouro_run
from .training import baselines
from .training.prompts import Prompt

DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)


def _err_last(pred: np.ndarray, prompt: Prompt) -> np.ndarray:
    """pred (..., B, n, o) -> (...): squared error at the last scored sample, mean over the batch."""
    return baselines.per_sample_error(pred, prompt)[..., int(baselines.scored_samples(prompt)[-1])]


@torch.no_grad()
def run_curves(run, prompt: Prompt, thresholds, device: str) -> dict:
    """The curves of one trained run (module docstring)."""
    model, T, mode = run.model.eval(), run.cfg.train_loops, run.cfg.adaptive
    tokens = torch.as_tensor(prompt.tokens, device=device)
    out = {"adaptive": mode, "T": T}
    if mode == "loopformer":
        errs = []
        for L in range(1, T + 1):
            with model.loop_condition.budget(L):
                errs.append(float(_err_last(model(tokens, L).float().cpu().numpy(), prompt)))
        out["budgets"] = {"loops": list(range(1, T + 1)), "error": errs}
    each = model.forward_each_loop(tokens, T).float().cpu().numpy()        # (T + 1, B, n, o)
    out["fixed"] = {"loops": list(range(1, T + 1)), "error": _err_last(each[1:], prompt).tolist()}
    if mode == "ouro":
        answer = answer_position(torch.as_tensor(prompt.weight))
        rows = []
        for q in thresholds:
            pred, loops = ouro_run(model, tokens, T, answer, q)
            counts = np.bincount(loops.cpu().numpy(), minlength=T + 1)[1:]
            rows.append({"threshold": q, "mean_loops": float(loops.float().mean()),
                         "error": float(_err_last(pred.float().cpu().numpy(), prompt)),
                         "loops_histogram": counts.tolist()})
        out["thresholds"] = rows
    return out


def numpy_curves(prompt: Prompt, k_max: int, phi=None) -> dict:
    """GD and Newton after k = 1..k_max steps at the last scored sample (regression prompts), on x and,
    where ``phi`` is given (regression with representation), on Phi*(x): the algorithm that
    Theorem 3.1's loop runs."""
    last = baselines.scored_samples(prompt)[-1:]
    res = {}
    for features, suffix in ((None, ""),) + (((phi, " on Phi*(x)"),) if phi is not None else ()):
        for name, label in (("gd", "GD"), ("newton", "Newton")):
            path = baselines.each_step(name, k_max, None, features, last)(prompt)   # (k_max + 1, B, n, 1)
            res[label + suffix] = {"loops": list(range(1, k_max + 1)), "error": _err_last(path[1:], prompt).tolist()}
    return res


def loops_used(runs, prompt: Prompt, thresholds=DEFAULT_THRESHOLDS, device: str = "cpu") -> dict:
    curves = {r.name: run_curves(r, prompt, thresholds, device) for r in runs
              if r.init is None and r.cfg.train_loops}
    k_max = max([c["T"] for c in curves.values()], default=0)
    phi = runs[0].cfg.task_spec().phi if runs and runs[0].cfg.task == "representation" else None
    numpy = numpy_curves(prompt, k_max, phi) if (prompt.x is not None and k_max) else {}
    return {"runs": curves, "numpy": numpy,
            "zero": float(_err_last(baselines.zero(prompt), prompt)),
            "left_out": [r.name for r in runs if r.init is not None or not r.cfg.train_loops]}


def _draw(ax, result: dict, extra: dict | None) -> None:
    for name, c in result["runs"].items():
        label = {"none": "fixed-T looped", "ouro": "ouro model, fixed t", "loopformer": "loopformer model, full traj."}
        line, = ax.plot(c["fixed"]["loops"], c["fixed"]["error"], "-", lw=1,
                        label=f"{name}: {label[c['adaptive']]}")
        if "thresholds" in c:
            xs, ys = [r["mean_loops"] for r in c["thresholds"]], [r["error"] for r in c["thresholds"]]
            qs = ", ".join(f"{r['threshold']:g}" for r in c["thresholds"])
            ax.plot(xs, ys, "o", color=line.get_color(), label=f"{name}: ouro exit, q in {{{qs}}}")
        if "budgets" in c:
            ax.plot(c["budgets"]["loops"], c["budgets"]["error"], "s--", color=line.get_color(), ms=4,
                    label=f"{name}: loopformer budget L")
    for name, c in result["numpy"].items():
        ax.plot(c["loops"], c["error"], ":" if "Phi" not in name else "-.", lw=1.5, label=f"numpy {name}, k steps")
    for label, c in (extra or {}).items():
        ax.plot(c["loops"], c["error"], "^", ms=5, label=label)            # points: one per tolerance
    ax.axhline(result["zero"], color="grey", lw=0.6, label="predict zero")
    ax.set(xscale="log", yscale="log", xlabel="loops used (steps for numpy)", ylabel="squared error at x_N")


def plot(result: dict, path: Path, title: str, extra: dict | None = None) -> None:
    """result: ``loops_used``'s dict; extra: label -> {"loops": [...], "error": [...]} more curves
    (drawn on a second, log-log panel over all loops when they go beyond the trained T)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = max(c["T"] for c in result["runs"].values())
    wide = any(max(c["loops"]) > T + 0.5 for c in (extra or {}).values())
    fig, axes = plt.subplots(1, 2 if wide else 1, figsize=(12 if wide else 6.5, 4.6), squeeze=False)
    for ax in axes[0]:
        _draw(ax, result, extra)
    ax = axes[0, 0]
    ax.set(xscale="linear", xlim=(0.7, T + 0.3), title=title + f" (loops 1..{T})")
    trained = [e for c in result["runs"].values() for k in ("fixed", "budgets") if k in c for e in c[k]["error"]]
    trained += [r["error"] for c in result["runs"].values() for r in c.get("thresholds", [])]
    finite = [e for e in trained + [result["zero"]] if e is not None and np.isfinite(e)]
    ax.set_ylim(0.5 * min(finite), 2 * max(finite))
    if len(finite) < len(trained) + 1:          # a diverged run: its points are not drawn, and said so
        fig.text(0.01, 0.01, "not drawn: non-finite errors (a diverged run)", fontsize=7)
    ax.legend(fontsize=6)
    if wide:
        axes[0, 1].set(title="all loops, with the constructions' halting (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
