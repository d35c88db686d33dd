"""Printing a sweep: configuration, table, verdict and notes; the JSON output (the plot: ``plot``)."""
from __future__ import annotations

import math
import re
import textwrap
from collections import defaultdict

import numpy as np

from constructions.linearise import estimate, is_mirror, order

from .outputs import json_text, write_atomic
from .sweep import LOST, Row, attention_roundoff, precision, rows_as_dicts, storage_name, unit_roundoff


class Verdict(list):
    """The verdict sentences (a list of str, one per (dtype, variant), each at most two lines of
    ``WIDTH`` columns once wrapped) and, in ``notes``, the details behind them (printed unless
    ``--quiet``, kept in the JSON)."""

    def __init__(self, lines=(), notes=()):
        super().__init__(lines)
        self.notes = list(notes)


WIDTH = 100


def split_verdict(verdict, notes=()) -> tuple[list[str], list[str]]:
    return list(verdict), list(getattr(verdict, "notes", [])) + list(notes)


def wrap(line: str, indent: str = "  ") -> str:
    return textwrap.fill(line, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False)


def format_config(config: dict, shown: dict | None = None) -> str:
    """The configuration line (every key but the lists below, and those already in ``shown``, the
    line printed before the sweep: then the line starts with "from the data:"), score bounds, arithmetic
    floors and excluded problems."""
    shown = shown or {}
    keys = [k for k in config if k not in ("excluded", "score_bounds", "arithmetic_floor")
            and not (k in shown and shown[k] == config[k])]
    lines = [("from the data: " if shown else "configuration: ") + ", ".join(f"{k}={config[k]}" for k in keys)] if keys else []
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
    if config.get("excluded"):
        lines.append(f"excluded {len(config['excluded'])} problem(s) outside the construction's assumptions:")
        lines += [f"  problem {i}: {why}" for i, why in list(config["excluded"].items())[:10]]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "      -  "
    return f"{x:9.2e}" if x == 0 or 1e-99 <= abs(x) < 1e100 else f"{x:9.1e}"   # 9 columns always


def _fmt_c(x: float) -> str:
    return "    -  " if not math.isfinite(x) else (f"{x:7.2f}" if abs(x) < 1e4 else f"{x:7.1e}")


def best_row(rs: list[Row]) -> Row | None:
    """The row a verdict cites and the table marks ``<best``: the smallest prediction error among the
    ok rows of the sweep (the automatic-temperature row is an extra, except for copy, whose default
    beta is one point of its grid). None when no row is ok."""
    ok = [r for r in rs if r.status == "ok" and (not r.auto or r.algorithm == "copy")]
    return min(ok, key=lambda r: r.error_prediction, default=None)


def format_table(rows: list[Row]) -> str:
    if rows and all(r.algorithm == "copy" for r in rows):
        return _copy_table(rows)
    wd = max([5] + [len(r.dtype) for r in rows])
    wv = max([7] + [len(r.variant) for r in rows])
    head = (f"{'dtype':{wd}} {'variant':{wv}} {'theta':>9} {'C':>7} {'c':>9} {'err_iter':>9} {'err_pred':>9} "
            f"{'med_pred':>9} {'growth':>9} {'bound':>9} {'bound_T':>9}  status")
    best = {k: best_row(rs) for k, rs in _groups(rows).items()}
    out = [head, "-" * len(head)]
    for r in rows:
        mark = " *auto" if r.auto else ""
        if best.get((r.dtype, r.variant)) is r:
            mark += " <best"
        out.append(f"{r.dtype:{wd}} {r.variant:{wv}} {_fmt(r.theta)} {_fmt_c(r.C)} {_fmt(r.c)} "
                   f"{_fmt(r.error_iterate)} {_fmt(r.error_prediction)} {_fmt(r.median_prediction)} "
                   f"{_fmt(r.growth)} {_fmt(r.bound_step)} {_fmt(getattr(r, 'bound_T', math.nan))}  {r.status}{mark}")
    return "\n".join(out)


def _copy_table(rows: list[Row]) -> str:
    """copy rows hold theta = 1/beta, C = beta margin, c = margin; the table shows beta itself."""
    wd = max([5] + [len(r.dtype) for r in rows])
    head = (f"{'dtype':{wd}} {'beta':>9} {'beta*margin':>11} {'err_raw':>9} {'err_block':>9} {'med_block':>9} "
            f"{'bound':>9}  status")
    best = {k: best_row(rs) for k, rs in _groups(rows).items()}
    out = [head, "-" * len(head)]
    for r in rows:
        mark = (" *auto" if r.auto else "") + (" <best" if best.get((r.dtype, r.variant)) is r else "")
        out.append(f"{r.dtype:{wd}} {_fmt(1 / r.theta)} {_fmt(r.C):>11} {_fmt(r.error_iterate)} "
                   f"{_fmt(r.error_prediction)} {_fmt(r.median_prediction)} {_fmt(r.bound_step)}  {r.status}{mark}")
    return "\n".join(out)


def _groups(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    g: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        g[(r.dtype, r.variant)].append(r)
    return g


def verdict_lines(rows: list[Row], n: int, floors: dict | None = None) -> Verdict:
    """One sentence per (dtype, variant): the floor, where it is, what sets it, and, with ``floors``
    (the configuration's ``arithmetic_floor``), the algorithm's own error in that arithmetic. The
    notes give the details: the law's reason, the rise below the floor, the overflow point, the
    automatic temperature, the T-loop bound."""
    out = Verdict()
    floors = floors or {}
    for (dtype, variant), rs in _groups(rows).items():
        key = f"{dtype} {variant}"
        sweep = [r for r in rs if not r.auto and r.status in ("ok", "lost")]
        best = best_row(rs)
        if not sweep:
            out.append(f"{key}: no temperature gave a finite run (every one overflowed or diverged).")
            continue
        if best is None:
            line, note = _lost_line(dtype, variant, rs, min(sweep, key=lambda r: r.error_prediction), n)
            out.append(line)
            out.notes.append(note)
            continue
        falling = [r for r in sweep if r.theta >= 10 * best.theta and r.theta <= 0.1]
        law = ""
        if len(falling) >= 2:
            slope = np.polyfit(np.log10([r.theta for r in falling]),
                               np.log10([max(r.error_prediction, 1e-300) for r in falling]), 1)[0]
            law = f"falls as theta^{slope:.1f} to" if slope >= 0.5 else ""
        with np.errstate(over="ignore", invalid="ignore"):
            t_, l_, r_ = estimate(variant, best.theta, best.C, n, attention_roundoff(dtype))
        terms = {"truncation": float(t_), "leakage": float(l_), "rounding": float(r_)}
        setter = max(terms, key=terms.get)
        mirror = is_mirror(variant)
        short = {"rounding": "set by rounding", "truncation": f"set by truncation (theta^{order(variant)})",
                 "leakage": "set by sink leakage (n e^-C)"}[setter]
        reason = {"rounding": ("rounding: the heads' O(theta) difference is divided by c (estimate u/theta)" if mirror
                               else "rounding: the softmax forms exp(c*a - C), resolving c*a only to ~ulp(C), "
                                    "amplified by 1/c (estimate u C/theta)"),
                  "truncation": "truncation of exp(c*a) (estimate theta^P)",
                  "leakage": "sink leakage n e^{-C}"}[setter]
        below = [r for r in sweep if r.theta < best.theta]
        if below and below[-1].error_prediction > 10 * best.error_prediction:
            short = f"where rounding meets truncation (theta^{order(variant)})"
            reason = (f"rounding, which rises as 1/theta below it, meeting truncation (theta^{order(variant)}) "
                      + ("above it (mirror: no sink, no C)" if mirror else
                         "above it; with a sink the softmax resolves c*a only to ~ulp(C), so u*C/theta"))
        plateau = [r for r in sweep if r.status == "ok" and r.error_prediction <= 4 * best.error_prediction]
        span = max(r.theta for r in plateau) / min(r.theta for r in plateau)
        if precision(dtype).attention is not None and span >= 100:
            short = f"set by the {storage_name(dtype)} stream, not the {precision(dtype).attention} attention"
            reason = (f"the {storage_name(dtype)} stream (residual adds, FFNs, stored weights), not the "
                      f"attention ({precision(dtype).attention}): within 4x of it from theta="
                      f"{min(r.theta for r in plateau):.0e} to {max(r.theta for r in plateau):.0e}")
        zero = best.error_prediction == 0.0
        base = storage_name(dtype)
        f = floors.get(base, {}).get("prediction_max", 0.0)
        if zero:
            out.append(f"{key}: the prediction error is exactly 0 at theta={best.theta:.0e} (the best row).")
        else:
            at = f"a floor of {best.error_prediction:.2e} at theta={best.theta:.0e}"
            alg = f"; {best.error_prediction / f:.3g}x numpy's own {base} error ({f:.2e})" if f > 0 else ""
            plain = re.sub(r" \(theta\^\d+\)", "", short)     # the law already names the power
            out.append(_fit([f"{key}: the prediction error {law} {at}, {plain}{alg}." if law else "",
                             f"{key}: the prediction error has {at}, {short}{alg}.",
                             f"{key}: the prediction error has {at}, {short}."]))
        notes = ([f"the error {law.removesuffix(' to')} above the floor"] if law else []) + [f"floor set by {reason}"]
        if below:
            notes.append(f"below it the error rises again ({_fmt(below[-1].error_prediction).strip()} at "
                         f"theta={below[-1].theta:.0e})")
        over = [r for r in rs if r.status == "overflow" and not r.auto]
        if over:
            what = "n/c" if mirror else "e^C/c"
            notes.append(f"the value weights {what} overflow {dtype} at theta={over[0].theta:.0e} (C={over[0].C:.0f})")
        auto = [r for r in rs if r.auto]
        if auto:
            a = auto[0]
            notes.append(f"automatic temperature (C={a.C:.1f}, c={a.c:.2e}) gives {_fmt(a.error_prediction).strip()}"
                         if a.status == "ok" else f"automatic temperature: {a.status}")
        bT = [r for r in rs if r.status == "ok" and math.isfinite(getattr(r, "bound_T", math.nan))]
        if bT:
            r0 = min(bT, key=lambda r: r.bound_T)
            notes.append(f"the tightest finite T-loop bound is {r0.bound_T:.2e} at theta={r0.theta:.0e} "
                         f"(measured {r0.error_prediction:.2e})")
        elif any(math.isinf(getattr(r, "bound_T", math.nan)) for r in rs if r.status == "ok"):
            notes.append("no finite T-loop bound at any temperature (see verify.bounds)")
        out.notes.append(f"{key}: " + "; ".join(notes))
    return out


def _fit(candidates: list[str]) -> str:
    """The first (most detailed) sentence that wraps into at most two lines."""
    return next((c for c in candidates if c and wrap(c).count("\n") <= 1), candidates[-1])


def _lost_line(dtype: str, variant: str, rs: list[Row], best: Row, n: int) -> tuple[str, str]:
    """Every temperature lost the signal (error > 0.5): say so (the verdict), and (the note) what the
    estimates put the best reachable error at for this dtype's unit roundoff (the sweep's schedule of C)."""
    u = unit_roundoff(dtype)
    theta = np.logspace(-12, 0, 241)
    C = 0.0 if is_mirror(variant) else math.log(20 * n) + order(variant) * np.log(1.0 / theta)
    t_, l_, r_ = estimate(variant, theta, C, n, u)
    total = t_ + l_ + r_
    i = int(np.argmin(total))
    over = [r for r in rs if r.status == "overflow" and not r.auto]
    what = "n/c" if is_mirror(variant) else "e^C/c"
    ovf = f"; the value weights {what} overflow {dtype} at theta={over[0].theta:.0e}" if over else ""
    zero = ", where a problem's output sank to 0" if abs(best.error_prediction - 1.0) < 1e-3 else ""
    med = min((r for r in rs if not r.auto and r.status in ("ok", "lost")), key=lambda r: r.median_prediction)
    line = _fit([f"{dtype} {variant}: the signal is lost at every temperature: the smallest worst-problem error "
                 f"is {best.error_prediction:.2e} at theta={best.theta:.0e}{zero}, above {LOST}; u={u:.1e} is too "
                 f"coarse.", f"{dtype} {variant}: the signal is lost at every temperature (best error "
                 f"{best.error_prediction:.2e} at theta={best.theta:.0e}{zero}): u={u:.1e} is too coarse."])
    note = (f"{dtype} {variant}: best median prediction error {med.median_prediction:.2e} at "
            f"theta={med.theta:.0e}; the estimates (truncation theta^{order(variant)} + rounding "
            f"{'u/theta' if is_mirror(variant) else 'u C/theta'} per unit weight, amplified by the loops) "
            f"bottom out at {total[i]:.1e} per head output near theta={theta[i]:.0e}{ovf}")
    return line, note


def write_json(path: str, config: dict, rows: list[Row], verdict: list[str], notes: list[str] = ()) -> None:
    """Strict JSON (non-finite numbers as null), written whole or not at all (``outputs``)."""
    text = json_text({"config": config, "rows": rows_as_dicts(rows), "verdict": list(verdict), "notes": list(notes)})

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text + "\n")
    write_atomic(path, write)
