"""Tables of one reproduction's results, from the files reproduce.py copied to RESULTS/NAME.

    python experiments/summarise.py NAME [NAME ...] [--results docs/results] [--runs-root runs/repro]

Writes RESULTS/NAME/summary.md and prints it. Reads eval.json (the curves of evaluate), each run's
metrics.jsonl (the last eval row: the Eq. 3 loss on the fixed evaluation batch against predict-zero)
and, when RUNS_ROOT/logs/<run>.log exists, copies that training log (its header names the parameter
count) to RESULTS/NAME/<run>/train.log. Numbers only; the reading of them is docs/reproductions.md.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path


def _last_eval(metrics: Path) -> dict:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    evals = [r for r in rows if r["kind"] == "eval"]
    if not evals:
        raise SystemExit(f"summarise: {metrics} has no eval row")
    return evals[-1]


def _params(log: Path) -> str:
    m = re.search(r"params=([\d,]+)", log.read_text()) if log.exists() else None
    return m.group(1) if m else "?"


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def summarise(name: str, results: Path, runs_root: Path) -> str:
    res = results / name
    ev = json.loads((res / "eval.json").read_text())
    runs = sorted(p.name for p in res.iterdir() if (p / "config.json").exists())
    for r in runs:
        log = runs_root / "logs" / f"{r}.log"
        if log.exists():
            shutil.copy2(log, res / r / "train.log")
    ps = ev["per_sample"]
    lines = [f"# {name}: numbers", "", f"task `{ev['task']}`, N = {ev['n_points']} in-context samples, "
             f"{ev['batch']} evaluation prompts (seed {ev['seed']}). Errors: mean square error; "
             "`err@k`: predicting with k samples in context (k = 0: none).", "",
             "| run | params | steps | eval loss / predict-zero | err@N-1 (last) | mean err over samples | "
             "err after T loops | after 2T | after 200 | min over loops (at) |", "|---" * 10 + "|"]
    for r in runs:
        row = _last_eval(res / r / "metrics.jsonl")
        cur = ps.get(r)
        loops = ev["per_loop"].get(r)
        T = ev["trained_T"].get(r) or 0
        if loops:
            lo = min(range(len(loops)), key=lambda i: loops[i] if loops[i] is not None else float("inf"))
            lcols = [_f(loops[T]), _f(loops[min(2 * T, len(loops) - 1)]), _f(loops[-1]), f"{_f(loops[lo])} ({lo})"]
        else:
            lcols = ["no loop"] * 4
        lines.append(f"| {r} | {_params(res / r / 'train.log')} | {row['step']} | "
                     f"{_f(row['loss'] / row['zero_loss'])} | {_f(cur[-1] if cur else None)} | "
                     f"{_f(sum(cur) / len(cur) if cur else None)} | " + " | ".join(lcols) + " |")
    base = [k for k in ps if k not in runs]
    if base:
        lines += ["", "| baseline | err@1 | err@d | err@N-1 (last) | mean err over samples |", "|---" * 5 + "|"]
        d = json.loads((res / runs[0] / "config.json").read_text())["d"]
        for k in base:
            c = ps[k]
            lines.append(f"| {k} | {_f(c[1])} | {_f(c[min(d, len(c) - 1)])} | {_f(c[-1])} | {_f(sum(c) / len(c))} |")
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(re.sub(r"-s\d+$", "", r), []).append(r)
    multi = {g: rs for g, rs in groups.items() if len(rs) > 1}
    if multi:
        lines += ["", "Across seeds (mean, min..max):", "",
                  "| model | seeds | err@N-1 (last) | mean err over samples | err after 200 loops |", "|---" * 5 + "|"]
        for g, rs in multi.items():
            def stat(vals):
                vals = [v for v in vals if v is not None]
                return f"{statistics.mean(vals):.4g} ({min(vals):.4g}..{max(vals):.4g})" if vals else "n/a"
            last = stat([ps[r][-1] for r in rs if r in ps])
            mean = stat([sum(ps[r]) / len(ps[r]) for r in rs if r in ps])
            l200 = stat([ev["per_loop"][r][-1] for r in rs if r in ev["per_loop"]])
            lines.append(f"| {g} | {len(rs)} | {last} | {mean} | {l200 if any(r in ev['per_loop'] for r in rs) else 'no loop'} |")
    if ev.get("not_drawn"):
        lines += ["", "Not drawn (evaluate's note): " + "; ".join(x for v in ev["not_drawn"].values() for x in v)]
    text = "\n".join(lines) + "\n"
    (res / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/summarise.py", allow_abbrev=False,
                                description="Write RESULTS/NAME/summary.md from a reproduction's results.")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--results", default="docs/results")
    p.add_argument("--runs-root", default="runs/repro")
    a = p.parse_args(argv)
    for n in a.names:
        if not (Path(a.results) / n / "eval.json").is_file():
            p.error(f"NAME={n!r} is invalid: {Path(a.results) / n / 'eval.json'} does not exist (run reproduce.py first)")
    for n in a.names:
        print(summarise(n, Path(a.results), Path(a.runs_root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
