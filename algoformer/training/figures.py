"""The figures of ``python -m algoformer.evaluate``, drawn from its result (the content of eval.json).

    fig2_samples.png   error against the number of in-context samples (Fig. 2)
    fig3_loops.png     error against the loop iteration (Fig. 3): integer ticks, the trained T marked and
                       labelled, the runs without a loop (the standard transformer) named below the axes
    fig5_baselines.png the trained models against k steps of GD and Newton (Fig. 5)
"""
from __future__ import annotations

import math
from pathlib import Path

BASELINE_STEPS = (5, 10, 15, 20)


def drawable(curve) -> bool:
    """A curve with at least one finite positive value (a log axis can show it; a diverged run's
    all-NaN / inf curve cannot)."""
    return any(v is not None and math.isfinite(v) and v > 0 for v in curve)


def plots(result: dict, run_names: list[str], out: Path, regression: bool) -> list[str]:
    """Draws the figures that the result supports; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curve_runs = [n for n in run_names if n in result["per_sample"]]

    def samples_plot(names, path, title):
        fig, ax = plt.subplots(figsize=(6, 4.3))
        left_out = [n for n in names if not drawable(result["per_sample"][n])]
        for n in names:
            if n not in left_out:
                c = result["per_sample"][n]
                ax.plot(range(len(c)), c, label=n, ls="--" if n not in run_names else "-")
        ax.set(yscale="log", xlabel="in-context samples", ylabel="square error", title=title)
        if left_out:
            fig.text(0.01, 0.01, f"not drawn (errors not finite): {', '.join(left_out)}", fontsize=7, color="grey")
        ax.legend(fontsize=7)
        fig.tight_layout(rect=(0, 0.04 if left_out else 0, 1, 1))
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)

    if curve_runs:
        samples_plot(curve_runs + ["zero"] + (["least squares"] if regression else []), out / "fig2_samples.png",
                     f"{result['task']}: error against in-context samples (Fig. 2)")
    if result["per_loop"]:
        fig = loops_figure(result, run_names)
        fig.savefig(out / "fig3_loops.png", dpi=120)
        plt.close(fig)
        written.append("fig3_loops.png")
    if regression and curve_runs:
        base = [f"{m} k={k}" for m in ("Newton", "GD") for k in BASELINE_STEPS]
        samples_plot(curve_runs + base, out / "fig5_baselines.png",
                     f"{result['task']}: trained models against GD and Newton (Fig. 5)")
    return written


def loops_figure(result: dict, run_names: list[str]):
    """Fig. 3: each looped run's error after t = 0..max_loops loops, its numpy reference (runs from a
    construction), a labelled marker at every trained T, and the runs it leaves out named below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4.4))
    drawn, marked = set(), set()                   # runs of one construction share their reference
    diverged = [n for n, c in result["per_loop"].items() if not drawable(c)]
    for n, c in result["per_loop"].items():
        if n in diverged:
            continue
        line, = ax.plot(range(len(c)), c, label=f"{n} (trained T={result['trained_T'][n]})")
        ref = result["per_loop_reference"].get(n)
        if ref is not None and (ref["label"], tuple(ref["per_loop"])) not in drawn:
            drawn.add((ref["label"], tuple(ref["per_loop"])))
            ax.plot(range(len(ref["per_loop"])), ref["per_loop"], ls="--", color=line.get_color(),
                    label=f"{ref['label']}, same prompts")
        T = result["trained_T"][n]
        if T not in marked and T < len(c):
            marked.add(T)
            ax.axvline(T, color="grey", ls=":", lw=1, label=f"T={T} (loops in training)")
            ax.annotate(f"T={T}", (T, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="grey")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="loop iteration", ylabel="square error", yscale="log" if len(diverged) < len(result["per_loop"])
           else "linear", title=f"{result['task']}: error against loop iteration (Fig. 3)")
    no_loop = [n for n in run_names if n not in result["per_loop"]]
    notes = ([f"no loop: {', '.join(no_loop)}"] if no_loop else []) + \
        ([f"errors not finite: {', '.join(diverged)}"] if diverged else [])
    left_out = bool(notes)
    if notes:
        fig.text(0.01, 0.01, f"not drawn ({'; '.join(notes)})", fontsize=7, color="grey")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if left_out else 0, 1, 1))
    return fig
