"""``--plot PATH``: the prediction error of every (dtype, variant) against the temperature 1/theta.

Nothing is dropped: ok rows are filled markers on the line, lost rows (error above 0.5) hollow
markers on it, diverged and overflow rows (no finite error) crosses along the top edge, and an
exact 0 (which a log axis cannot show) a downward triangle on a marked line below the smallest
positive error. The algorithm's own error in each arithmetic (numpy, the configuration's
``arithmetic_floor``) is a grey reference line in that dtype's line style. Colour and marker tell
the variant, line style the dtype (one legend entry each); the legend sits outside the axes, and
overflow rows far beyond the data are drawn at the right edge. copy rows are drawn against
beta, with the bound 2(n-1) e^(-beta margin) (per unit max|x|) as the reference line.
"""
from __future__ import annotations

import math
import os

from .outputs import write_atomic
from .sweep import Row

MARKERS = "osD^vP*Xh<>"
STYLES = {"float64": "-", "float32": "--", "bfloat16": ":", "tf32": (0, (5, 1, 1, 1))}


def _style(dtype: str):
    return STYLES.get(dtype, "-." if "+" in dtype else "-")


def write_plot(path: str, rows: list[Row], title: str, config: dict | None = None) -> list[str]:
    """Writes the figure (format from the suffix) and returns its legend's labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    copy = all(r.algorithm == "copy" for r in rows)
    x_of = lambda r: 1 / r.theta           # 1/theta; copy rows hold theta = 1/beta, so beta
    positive = [r.error_prediction for r in rows if math.isfinite(r.error_prediction) and r.error_prediction > 0]
    zero_y = min(positive) / 10 if positive else 1e-17
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dtype, r.variant), []).append(r)
    variants = list(dict.fromkeys(v for _, v in groups))
    dtypes = list(dict.fromkeys(d for d, _ in groups))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(variants) > len(colours):
        colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    xs = [x_of(r) for r in rows if math.isfinite(r.error_prediction) and math.isfinite(r.theta)]
    x_max = max(xs) * 30 if xs else math.inf       # overflow rows far beyond the data sit at this edge
    fig, ax = plt.subplots(figsize=(10, 5))
    top = blended_transform_factory(ax.transData, ax.transAxes)
    zeros = lost = broken = beyond = False
    handles = []
    for (dtype, variant), rs in groups.items():
        k = variants.index(variant)
        colour, marker = colours[k % len(colours)], MARKERS[k % len(MARKERS)]
        finite = sorted((r for r in rs if not r.auto and math.isfinite(r.error_prediction)
                         and math.isfinite(r.theta)), key=x_of)
        ys = [r.error_prediction if r.error_prediction > 0 else zero_y for r in finite]
        ax.plot([x_of(r) for r in finite], ys, linestyle=_style(dtype), color=colour, lw=1.1)
        for r, y in zip(finite, ys):
            hollow = r.status != "ok"
            lost |= hollow
            zeros |= r.error_prediction == 0
            ax.plot([x_of(r)], [y], marker="v" if r.error_prediction == 0 else marker, ms=4, color=colour,
                    markerfacecolor="none" if hollow else colour, linestyle="none")
        for r in rs:
            if not math.isfinite(r.error_prediction) and math.isfinite(r.theta):
                broken = True
                far = x_of(r) > x_max
                beyond |= far
                ax.plot([min(x_of(r), x_max)], [0.97], marker=">" if far else "x", ms=6, color=colour,
                        transform=top, linestyle="none", clip_on=False)
            elif r.auto and math.isfinite(r.error_prediction) and not copy:
                ax.plot([x_of(r)], [r.error_prediction or zero_y], "*", ms=11, color=colour,
                        markerfacecolor="none" if r.status != "ok" else colour, linestyle="none")
    for k, variant in enumerate(variants):
        handles += ax.plot([], [], color=colours[k % len(colours)], marker=MARKERS[k % len(MARKERS)], ms=4,
                           label=variant)
    if len(dtypes) > 1 or len(variants) > 1:
        for dtype in dtypes:
            handles += ax.plot([], [], color="k", linestyle=_style(dtype), label=f"line: {dtype}")
    if copy:
        bound = sorted((r for r in rows if math.isfinite(r.bound_step) and r.bound_step > 0), key=x_of)
        ax.plot([x_of(r) for r in bound], [r.bound_step for r in bound], color="0.5", lw=1, linestyle="-.",
                label="bound 2(n-1) e^(-beta margin)")
    for dtype, f in ((config or {}).get("arithmetic_floor") or {}).items():
        if f.get("prediction_max", 0) > 0:
            ax.axhline(f["prediction_max"], color="0.45", lw=0.9, linestyle=_style(dtype),
                       label=f"numpy itself in {dtype}: {f['prediction_max']:.1e}")
    if zeros:
        ax.axhline(zero_y, color="0.7", lw=0.6)
        ax.plot([], [], "kv", ms=4, markerfacecolor="none", label=f"exactly 0 (drawn at {zero_y:.0e})")
    if lost:
        ax.plot([], [], "ko", ms=4, markerfacecolor="none", label="hollow: lost (error > 0.5)")
    if broken:
        ax.plot([], [], "kx", ms=6, label="x on top: overflow or diverged (no error)")
    if beyond:
        ax.plot([], [], "k>", ms=6, label="> on top: the same, far beyond the edge")
    if any(r.auto for r in rows) and not copy:
        ax.plot([], [], "k*", ms=9, label="star: automatic temperature")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if beyond:
        ax.set_xlim(min(xs) / 2, x_max * 1.5)
    floors = [f["prediction_max"] for f in ((config or {}).get("arithmetic_floor") or {}).values()
              if f.get("prediction_max", 0) > 0]
    tops = positive + floors + ([r.bound_step for r in rows if math.isfinite(r.bound_step)] if copy else [])
    ax.set_ylim(min([zero_y] + floors) / 3, max(tops + [1.0]) * 5)   # a bound far below the data must not squash it
    if copy:
        ax.set_xlabel("beta   (positional score scale; the leak is e^(-beta margin))")
        ax.set_ylabel("block error relative to max|x| (max over problems)")
    else:
        ax.set_xlabel("temperature 1/theta   (theta = c * max|a|; sink variants: C = ln(20n) + P ln(1/theta))")
        ax.set_ylabel("relative error of the prediction (max over problems)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt, bbox_inches="tight"))
    plt.close(fig)
    return [t.get_text() for t in legend.get_texts()]
