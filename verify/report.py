"""Printing a sweep: configuration, table, verdict; JSON and PNG outputs."""
from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np

from constructions.linearise import estimate, is_mirror, order

from .sweep import LOST, Row, attention_roundoff, precision, rows_as_dicts, storage_name, unit_roundoff


def format_config(config: dict) -> str:
    keys = [k for k in config if k not in ("excluded", "score_bounds", "arithmetic_floor")]
    lines = ["configuration: " + ", ".join(f"{k}={config[k]}" for k in keys)]
    if config.get("score_bounds"):
        lines.append("score bounds max|a| per head group: "
                     + ", ".join(f"{g}={a:.4g}" for g, a in config["score_bounds"].items()))
    for dtype, f in config.get("arithmetic_floor", {}).items():
        against = "float64 numpy" if dtype != "float64" else "np.longdouble numpy"
        lines.append(f"the algorithm itself in {dtype} arithmetic (numpy, same problems, against {against}): "
                     f"prediction error max {f['prediction_max']:.2e}, median {f['prediction_median']:.2e}; "
                     f"iterate max {f['iterate_max']:.2e}"
                     + (f"; rounding the prompt to {dtype} alone (then float64): prediction max "
                        f"{f['input_rounding_max']:.2e}" if "input_rounding_max" in f else ""))
    if config["excluded"]:
        lines.append(f"excluded {len(config['excluded'])} problem(s) outside the construction's assumptions:")
        lines += [f"  problem {i}: {why}" for i, why in list(config["excluded"].items())[:10]]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "      -  " if x is None or not math.isfinite(x) else f"{x:9.2e}"


def format_table(rows: list[Row]) -> str:
    head = (f"{'dtype':8} {'variant':12} {'theta':>9} {'C':>7} {'c':>9} {'err_iter':>9} {'err_pred':>9} "
            f"{'med_pred':>9} {'growth':>9} {'bound':>9} {'bound_T':>9}  status")
    best = {k: min((r for r in rs if r.status == "ok"), key=lambda r: r.error_prediction, default=None)
            for k, rs in _groups(rows).items()}
    out = [head, "-" * len(head)]
    for r in rows:
        mark = " *auto" if r.auto else ""
        if best.get((r.dtype, r.variant)) is r:
            mark += " <best"
        out.append(f"{r.dtype:8} {r.variant:12} {_fmt(r.theta)} {r.C:7.2f} {_fmt(r.c)} {_fmt(r.error_iterate)} "
                   f"{_fmt(r.error_prediction)} {_fmt(r.median_prediction)} {_fmt(r.growth)} {_fmt(r.bound_step)} "
                   f"{_fmt(getattr(r, 'bound_T', math.nan))}  "
                   f"{r.status}{mark}")
    return "\n".join(out)


def _groups(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    g: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        g[(r.dtype, r.variant)].append(r)
    return g


def verdict_lines(rows: list[Row], n: int, floors: dict | None = None) -> list[str]:
    """One line per (dtype, variant): the floor, where it is, the law before it, what sets it; with
    ``floors`` (the configuration's ``arithmetic_floor``), how far above the algorithm's own floor
    in that arithmetic the emulation's best sits."""
    lines = []
    floors = floors or {}
    for (dtype, variant), rs in _groups(rows).items():
        sweep = [r for r in rs if not r.auto and r.status in ("ok", "lost")]
        if not sweep:
            lines.append(f"{dtype} {variant}: no finite run (every temperature overflowed or failed)")
            continue
        best = min(sweep, key=lambda r: r.error_prediction)
        if not any(r.status == "ok" for r in sweep):
            lines.append(_lost_line(dtype, variant, rs, best, n))
            continue
        falling = [r for r in sweep if r.theta >= 10 * best.theta and r.theta <= 0.1]
        law = ""
        if len(falling) >= 2:
            slope = np.polyfit(np.log10([r.theta for r in falling]),
                               np.log10([max(r.error_prediction, 1e-300) for r in falling]), 1)[0]
            law = f"falls as theta^{slope:.1f} down to " if slope >= 0.5 else ""
        t_, l_, r_ = estimate(variant, best.theta, best.C, n, attention_roundoff(dtype))
        terms = {"truncation": float(t_), "leakage": float(l_), "rounding": float(r_)}
        setter = max(terms, key=terms.get)
        mirror = is_mirror(variant)
        reason = {"rounding": ("rounding: the heads' O(theta) difference is divided by c (estimate u/theta)" if mirror
                               else "rounding: the softmax forms exp(c*a - C), resolving c*a only to ~ulp(C), "
                                    "amplified by 1/c (estimate u C/theta)"),
                  "truncation": "truncation of exp(c*a) (estimate theta^P)",
                  "leakage": "sink leakage n e^{-C}"}[setter]
        below = [r for r in sweep if r.theta < best.theta]
        if below and below[-1].error_prediction > 10 * best.error_prediction:
            reason = (f"rounding, which rises as 1/theta below it, meeting truncation (theta^{order(variant)}) "
                      + ("above it (mirror: no sink, no C)" if mirror else
                         "above it; with a sink the softmax resolves c*a only to ~ulp(C), so u*C/theta"))
        plateau = [r for r in sweep if r.status == "ok" and r.error_prediction <= 4 * best.error_prediction]
        span = max(r.theta for r in plateau) / min(r.theta for r in plateau)
        if precision(dtype).attention is not None and span >= 100:
            reason = (f"the {storage_name(dtype)} stream (residual adds, FFNs, stored weights), not the "
                      f"attention ({precision(dtype).attention}): within 4x of it from theta="
                      f"{min(r.theta for r in plateau):.0e} to {max(r.theta for r in plateau):.0e}")
        rise = (f"; below it the error rises again ({_fmt(below[-1].error_prediction).strip()} at "
                f"theta={below[-1].theta:.0e})") if below else ""
        over = [r for r in rs if r.status == "overflow"]
        what = "n/c" if is_mirror(variant) else "e^C/c"
        ovf = f"; the value weights {what} overflow {dtype} at theta={over[0].theta:.0e} (C={over[0].C:.0f})" if over else ""
        auto = [r for r in rs if r.auto]
        auto_s = ""
        if auto:
            a = auto[0]
            auto_s = (f"; automatic temperature (C={a.C:.1f}, c={a.c:.2e}) gives {_fmt(a.error_prediction).strip()}"
                      if a.status == "ok" else f"; automatic temperature: {a.status}")
        alg = ""
        base = storage_name(dtype)
        if base in floors and floors[base]["prediction_max"] > 0:
            f = floors[base]["prediction_max"]
            alg = (f"; the algorithm itself in {base} reaches {f:.2e}, so the emulation's floor is "
                   f"{best.error_prediction / f:.3g}x that")
        bT = [r for r in rs if r.status == "ok" and math.isfinite(getattr(r, "bound_T", math.nan))]
        bnd = ""
        if bT:
            r0 = min(bT, key=lambda r: r.bound_T)
            bnd = (f"; the tightest finite T-loop bound is {r0.bound_T:.2e} at theta={r0.theta:.0e} "
                   f"(measured {r0.error_prediction:.2e})")
        elif any(math.isinf(getattr(r, "bound_T", math.nan)) for r in rs if r.status == "ok"):
            bnd = "; no finite T-loop bound at any temperature (see verify.bounds)"
        lines.append(f"{dtype} {variant}: prediction error {law}a floor of {best.error_prediction:.2e} at "
                     f"theta={best.theta:.0e} (C={best.C:.1f}); floor set by {reason}{rise}{ovf}{auto_s}{alg}{bnd}")
    return lines


def _lost_line(dtype: str, variant: str, rs: list[Row], best: Row, n: int) -> str:
    """Every temperature lost the signal (error > 0.5): say so, and what the estimates put the best
    reachable error at for this dtype's unit roundoff (the sweep's schedule of C)."""
    u = unit_roundoff(dtype)
    theta = np.logspace(-12, 0, 241)
    C = 0.0 if is_mirror(variant) else math.log(20 * n) + order(variant) * np.log(1.0 / theta)
    t_, l_, r_ = estimate(variant, theta, C, n, u)
    total = t_ + l_ + r_
    i = int(np.argmin(total))
    over = [r for r in rs if r.status == "overflow"]
    what = "n/c" if is_mirror(variant) else "e^C/c"
    ovf = f"; the value weights {what} overflow {dtype} at theta={over[0].theta:.0e}" if over else ""
    zero = " (a problem's output sank to 0)" if abs(best.error_prediction - 1.0) < 1e-3 else ""
    med = min((r for r in rs if not r.auto and r.status in ("ok", "lost")), key=lambda r: r.median_prediction)
    return (f"{dtype} {variant}: the signal is lost at every temperature (best worst-problem prediction error "
            f"{best.error_prediction:.2e} at theta={best.theta:.0e}{zero}, above {LOST}; best median "
            f"{med.median_prediction:.2e} at theta={med.theta:.0e}); floor set by rounding: "
            f"u={u:.1e} is too coarse, the estimates (truncation theta^{order(variant)} + rounding "
            f"{'u/theta' if is_mirror(variant) else 'u C/theta'} per unit weight, amplified by the loops) "
            f"bottom out at {total[i]:.1e} per head output near theta={theta[i]:.0e}{ovf}")


def write_json(path: str, config: dict, rows: list[Row], verdict: list[str]) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    with open(path, "w") as f:
        json.dump(clean({"config": config, "rows": rows_as_dicts(rows), "verdict": verdict}), f, indent=1)


def write_plot(path: str, rows: list[Row], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (dtype, variant), rs in _groups(rows).items():
        sweep = [r for r in rs if not r.auto and r.status == "ok"]
        if not sweep:
            continue
        line, = ax.loglog([1 / r.theta for r in sweep], [max(r.error_prediction, 1e-17) for r in sweep],
                          "o-" if dtype == "float64" else "s--", ms=3, label=f"{dtype} {variant}")
        for r in rs:
            if r.auto and r.status == "ok":
                ax.plot([1 / r.theta], [max(r.error_prediction, 1e-17)], "*", ms=12, color=line.get_color())
    ax.set_xlabel("temperature 1/theta   (theta = c * max|a|; sink variants: C = ln(20n) + P ln(1/theta))")
    ax.set_ylabel("relative error of the prediction (max over problems)")
    ax.set_title(title + "  (star: automatic temperature)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
