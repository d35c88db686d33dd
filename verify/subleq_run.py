"""Run the SUBLEQ looped transformer loop by loop and compare every state with the interpreter.

The loop is driven here, one loop = one instruction, through the model's per-loop API
(``run_pre`` once, then ``run_loop``); after every loop the memory and the pc are decoded from the
residual stream (by sign) and compared with ``run_reference`` exactly, and the model's halt row with
the interpreter's halt (pc == P). A batch holds programs of one shape and runs in lockstep until
every program has halted (or ``max_steps``); a halted program must then stay put (its fixed point).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from constructions.bridge import build_model
from constructions.subleq import build
from constructions.subleq_layout import Shape, decode, encode
from constructions.subleq_machine import Program, run_reference

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Outcome:
    name: str
    steps: int                # instructions the interpreter executed
    halted: bool              # the interpreter reached pc == P within max_steps
    exact: bool               # memory, pc and halt equal the interpreter's after every loop
    first_error: int | None   # the first loop where they differ (None: never)
    detail: str               # what differed there
    margin: float             # smallest |entry| over the decoded +-1 rows in all loops (1: clean)
    final_memory: tuple[int, ...]


def _compare(dec, i: int, mem: np.ndarray, pc: int, halted: bool) -> str:
    if not dec.finite[i]:
        return "non-finite entries in the stream"
    if not np.array_equal(dec.memory[i], mem):
        bad = np.flatnonzero(dec.memory[i] != mem)
        j = int(bad[0])
        return f"mem[{j}]={int(dec.memory[i][j])}, interpreter {int(mem[j])} ({len(bad)} cells differ)"
    if int(dec.pc[i]) != pc:
        return f"pc={int(dec.pc[i])}, interpreter {pc}"
    if bool(dec.halt[i] == 1) != halted:
        return f"halt row {dec.halt[i]:g}, interpreter {'halted' if halted else 'running'}"
    return ""


def run_batch(programs: list[Program], lam: float, dtype: str = "float64", device: str = "cpu",
              max_steps: int = 10_000, printed: bool = False, extra_loops: int = 1) -> list[Outcome]:
    """Every program (one shape) through the model; ``extra_loops`` loops past the last halt check
    that halted programs stay put."""
    shape = Shape.of(programs[0])
    if any(Shape.of(p) != shape for p in programs):
        raise ValueError("run_batch needs programs of one shape (cells, instructions, bits)")
    refs = [run_reference(p, max_steps) for p in programs]
    model = build_model(build(shape, lam, printed), dtype=DTYPES[dtype], device=device)
    h = torch.tensor(np.stack([encode(p, shape) for p in programs]), dtype=DTYPES[dtype], device=device)
    n = len(programs)
    errors: list[tuple[int, str] | None] = [None] * n
    margin = np.ones(n)
    last = max(len(r) for r in refs) - 1 + extra_loops
    final = [None] * n
    with torch.no_grad():
        h = model.run_pre(h)
        for t in range(last + 1):
            if t > 0:
                h = model.run_loop(h, t)
            dec = decode(h.to(torch.float64).cpu().numpy(), shape)
            for i, ref in enumerate(refs):
                mem, pc = ref[min(t, len(ref) - 1)]
                halted = pc == programs[i].halt
                if t >= len(ref) and not halted:
                    continue                                  # past max_steps of a running program
                if errors[i] is None:
                    why = _compare(dec, i, mem, pc, halted)
                    if why:
                        errors[i] = (t, why)
                margin[i] = min(margin[i], dec.margin[i])
                final[i] = tuple(int(v) for v in dec.memory[i])
            if all(e is not None for e in errors):
                break
    out = []
    for i, (p, ref) in enumerate(zip(programs, refs)):
        e = errors[i]
        out.append(Outcome(p.name, len(ref) - 1, ref[-1][1] == p.halt, e is None, None if e is None else e[0],
                           "" if e is None else e[1], float(margin[i]), final[i]))
    return out

