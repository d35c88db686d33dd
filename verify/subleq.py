"""``python -m verify subleq``: the SUBLEQ looped transformer against the numpy interpreter.

Default run: each program (``--program NAME|FILE|all``) per dtype at temperature ``--lam``; after every
loop the memory, pc and halt flag decoded from the residual stream must equal the interpreter's
exactly. ``--sweep``: the smallest lam exact on every program, per dtype, and the largest memory
(cells, bits per word) exact on seeded random programs. Bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from constructions.subleq import lambda_bound
from constructions.subleq_layout import Shape
from constructions.subleq_machine import ProgramError, parse_program, random_program
from constructions.subleq_programs import PROGRAMS, expected_result

from .interface import ArgumentError, Command
from .subleq_run import DTYPES, run_batch


class InputError(Exception):
    pass


def _list(kind, lo, hi):
    def parse(s: str):
        try:
            vals = [kind(v) for v in s.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind.__name__}s in [{lo}, {hi}], got {s!r}") from None
        if not vals or any(not (lo <= v <= hi) for v in vals):
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind.__name__}s in [{lo}, {hi}], got {s!r}")
        return vals
    return parse


def _one(kind, lo, hi):
    lst = _list(kind, lo, hi)

    def parse(s: str):
        v = lst(s)
        if len(v) != 1:
            raise argparse.ArgumentTypeError(f"expected one {kind.__name__} in [{lo}, {hi}], got {s!r}")
        return v[0]
    return parse


def _dtypes(s: str) -> list[str]:
    names = list(DTYPES) if s == "all" else [v.strip() for v in s.split(",")]
    if not s or any(v not in DTYPES for v in names):
        raise argparse.ArgumentTypeError(f"expected 'all' or a comma list of {', '.join(DTYPES)}, got {s!r}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--program", default="all", metavar="NAME|FILE",
                   help=f"one of {', '.join(PROGRAMS)}, all (default), or a program file (docs/subleq.md)")
    p.add_argument("--lam", type=_one(float, 1e-3, 1e4), default=10.0, help="softmax temperature (default 10)")
    p.add_argument("--dtype", type=_dtypes, default=["float64", "float32"],
                   help=f"comma list of {', '.join(DTYPES)}, or all (default float64,float32)")
    p.add_argument("--max-steps", type=_one(int, 1, 1_000_000), default=10_000,
                   help="instructions at most before giving up on halting (default 10000)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="cpu, cuda, or auto (= cuda if available; default cpu)")
    p.add_argument("--seed", type=_one(int, 0, 2**32 - 1), default=0, help="seed of the random programs (--sweep), 0 to 2^32-1 (default 0)")
    p.add_argument("--printed", action="store_true",
                   help="the printed construction's constants in the shared FFN bias (defect 1 of docs/subleq.md)")
    p.add_argument("--sweep", action="store_true", help="sweep lam and the memory size, per dtype")
    p.add_argument("--lams", type=_list(float, 1e-3, 1e4), default=[1, 2, 3, 3.5, 4, 4.5, 5, 6, 8, 10, 20, 50, 100],
                   help="lam grid of --sweep")
    p.add_argument("--cells", type=_list(int, 1, 4096), default=[8, 64, 256], help="memory cells of --sweep")
    p.add_argument("--bits", type=_list(int, 2, 62), default=[2, 3, 4, 8, 16, 18, 20, 32, 48],
                   help="bits per word of --sweep")
    p.add_argument("--trials", type=_one(int, 1, 10_000), default=8, help="random programs per memory size (default 8)")
    p.add_argument("--json", metavar="PATH", help="write configuration, rows and verdict as JSON")
    p.add_argument("--show-attention", metavar="PATH", help="write every head's attention (first program, first "
                   "dtype, --lam) in TF_pre and the first and last loops as PNG")
    p.add_argument("--show-layout", metavar="PATH", help="write the residual stream by layout row after TF_pre and "
                   "the first loops as PNG (same program)")
    p.add_argument("--quiet", action="store_true", help="print only the configuration and the verdict")


def load_programs(spec: str):
    if spec == "all":
        return [f() for f in PROGRAMS.values()]
    if spec in PROGRAMS:
        return [PROGRAMS[spec]()]
    if not os.path.isfile(spec):
        raise InputError(f"argument --program: {spec!r} is neither a program ({', '.join(PROGRAMS)}, all) nor a file")
    with open(spec) as f:
        return [parse_program(f.read(), os.path.basename(spec))]


def _check_output(flag: str, path: str | None) -> None:
    if path:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d) or os.path.isdir(path):
            raise InputError(f"argument {flag}: cannot write {path!r} (no such directory, or it is a directory)")


def program_rows(programs, lam, dtypes, device, max_steps, printed=False):
    rows = []
    for dt in dtypes:
        for p in programs:
            o = run_batch([p], lam, dt, device, max_steps, printed)[0]
            ok, result = expected_result(p, o.final_memory) if o.final_memory else (False, "")
            rows.append({"dtype": dt, "program": p.name, "lam": lam, "lam_bound": round(lambda_bound(Shape.of(p)), 3),
                         "cells": p.n_cells, "instructions": p.n_instructions,
                         "bits": p.bits, "steps": o.steps, "halted": o.halted, "exact": o.exact,
                         "first_error": o.first_error, "detail": o.detail, "margin": o.margin,
                         "result": result, "result_ok": ok})
    return rows


def lam_sweep(programs, lams, dtypes, device, max_steps):
    rows = []
    for dt in dtypes:
        for lam in lams:
            outs = [run_batch([p], lam, dt, device, max_steps)[0] for p in programs]
            bad = [o for o in outs if not o.exact]
            rows.append({"dtype": dt, "lam": lam, "exact": len(outs) - len(bad), "of": len(outs),
                         "first_failure": f"{bad[0].name} loop {bad[0].first_error}: {bad[0].detail}" if bad else ""})
    return rows


def memory_sweep(cells, bits, dtypes, device, trials, seed, n_instructions=16, steps=32):
    """Per dtype and cell count, bits ascending until the first size that is not exact."""
    rows = []
    for dt in dtypes:
        for M in cells:
            for B in bits:
                rng = np.random.default_rng([seed, M, B])
                progs = [random_program(rng, M, n_instructions, B) for _ in range(trials)]
                lam = 1.25 * lambda_bound(Shape.of(progs[0]))
                outs = run_batch(progs, lam, dt, device, steps)
                bad = [o for o in outs if not o.exact]
                rows.append({"dtype": dt, "cells": M, "bits": B, "lam": round(lam, 3), "exact": len(outs) - len(bad),
                             "of": len(outs), "first_failure": f"loop {bad[0].first_error}: {bad[0].detail}" if bad else ""})
                if bad:
                    break
    return rows


def summarise(prog_rows, lam_rows, mem_rows, dtypes) -> list[str]:
    lines = []
    for dt in dtypes:
        if prog_rows:
            mine = [r for r in prog_rows if r["dtype"] == dt]
            ok = sum(r["exact"] and r["result_ok"] and r["halted"] for r in mine)
            lines.append(f"{dt}: {ok}/{len(mine)} programs exact at every loop and correct at the halt")
            for r in mine:
                if not r["halted"]:
                    lines.append(f"{dt}: {r['program']} did not halt within --max-steps={r['steps']}")
                if r["lam"] < r["lam_bound"]:
                    lines.append(f"{dt}: {r['program']}: lam={r['lam']:g} is below the derived bound {r['lam_bound']:g}")
        lr = [r for r in lam_rows if r["dtype"] == dt]
        if lr:
            good = [r["lam"] for r in lr if r["exact"] == r["of"]]
            tail = [r["lam"] for i, r in enumerate(lr) if all(s["exact"] == s["of"] for s in lr[i:])]
            lines.append(f"{dt}: smallest lam exact on every program: {min(good) if good else 'none in the grid'}"
                         + (f" (and every larger one from {min(tail)})" if tail and good and min(tail) != min(good) else ""))
        mr = [r for r in mem_rows if r["dtype"] == dt]
        for M in sorted({r["cells"] for r in mr}):
            exact = [r["bits"] for r in mr if r["cells"] == M and r["exact"] == r["of"]]
            fail = [r["bits"] for r in mr if r["cells"] == M and r["exact"] < r["of"]]
            lines.append(f"{dt}: {M} cells: exact up to {max(exact) if exact else 'none'} bits per word"
                         + (f", not exact at {fail[0]}" if fail else " (the largest tried)"))
    return lines


def _table(rows, keys) -> str:
    out = ["  ".join(keys)]
    for r in rows:
        out.append("  ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when everything run is exact (for --sweep: when the sweep completed), 1 otherwise;
    bad input raises InputError/ProgramError, which the dispatcher turns into one line and exit 2."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("argument --device: 'cuda' requested but no CUDA device is available")
    for flag in ("--json", "--show-attention", "--show-layout"):
        _check_output(flag, getattr(args, flag[2:].replace("-", "_")))
    programs = load_programs(args.program)
    config = {"algorithm": "subleq", "printed": args.printed, "dtypes": args.dtype, "device": args.device, "seed": args.seed, "lam": args.lam,
              "programs": [f"{p.name}(M={p.n_cells},P={p.n_instructions},B={p.bits})" for p in programs],
              "max_steps": args.max_steps, "torch": torch.__version__}
    if args.sweep:
        config.update(lams=args.lams, cells=args.cells, bits=args.bits, trials=args.trials)
    print("config: " + " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config.items()))
    prog_rows = [] if args.sweep else program_rows(programs, args.lam, args.dtype, args.device, args.max_steps,
                                                   args.printed)
    lam_rows = lam_sweep(programs, args.lams, args.dtype, args.device, args.max_steps) if args.sweep else []
    mem_rows = memory_sweep(args.cells, args.bits, args.dtype, args.device, args.trials, args.seed) if args.sweep else []
    if not args.quiet:
        if prog_rows:
            print(_table(prog_rows, ["dtype", "program", "cells", "instructions", "bits", "lam_bound", "steps", "exact",
                                     "margin", "result", "detail"]))
        if lam_rows:
            print(_table(lam_rows, ["dtype", "lam", "exact", "of", "first_failure"]))
        if mem_rows:
            print(_table(mem_rows, ["dtype", "cells", "bits", "lam", "exact", "of", "first_failure"]))
    verdict = summarise(prog_rows, lam_rows, mem_rows, args.dtype)
    print("verdict:")
    for line in verdict:
        print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "programs": prog_rows, "lam_sweep": lam_rows, "memory_sweep": mem_rows,
                       "verdict": verdict}, f, indent=1, default=str)
    if args.show_attention or args.show_layout:
        from .subleq_views import attention_figure, layout_figure
        if args.show_attention:
            attention_figure(programs[0], args.lam, args.dtype[0], args.show_attention)
        if args.show_layout:
            layout_figure(programs[0], args.lam, args.dtype[0], args.show_layout)
    if args.sweep:
        return 0
    return 0 if all(r["exact"] and r["result_ok"] and r["halted"] for r in prog_rows) else 1


ERRORS = (InputError, ProgramError)


def _run_command(args: argparse.Namespace) -> int:
    """``run``, with a malformed program or bad input reported as the CLI's one-line argument error."""
    try:
        return run(args)
    except ERRORS as e:
        raise ArgumentError(str(e)) from None


SUBLEQ = Command("subleq", "the SUBLEQ computer of Giannou et al. 2023, exact at every loop", add_arguments,
                 _run_command, __doc__.splitlines()[0])
