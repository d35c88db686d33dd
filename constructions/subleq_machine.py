"""The SUBLEQ machine of Giannou et al. 2023 (arXiv 2301.13196, Sec. 5), as plain numpy: programs,
their validation, the reference interpreter and the text format (docs/subleq.md).

The paper's variant, which this module follows, differs from the original one-instruction computer:

    original (Mazonka's OISC)                   this variant (the paper's Sec. 5.1)
    code and data share one memory, so          instructions live in their own columns of the
      programs may modify themselves             punchcard and are never written
    the pc counts memory cells, pc += 3         the pc counts instructions, pc += 1
    halts on a jump to a negative address       halts when the pc reaches P, the address one past
                                                 the last instruction (a jump to P, or falling off)
    words unbounded (or the host's int)         words are B-bit two's complement; subtraction wraps
                                                 modulo 2^B

One step of SUBLEQ(a, b, c): mem[b] <- mem[b] - mem[a] (wrapped); if the new mem[b] <= 0 the pc
jumps to c, else it moves to the next instruction. ``a`` and ``b`` address memory cells 0..M-1,
``c`` addresses instructions 0..P (P = halt).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ProgramError(ValueError):
    """A malformed program, an address outside memory, or a word beyond the encodable range."""


def word_range(bits: int) -> tuple[int, int]:
    """The B-bit two's complement range [-2^(B-1), 2^(B-1) - 1]."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def wrap(x: int, bits: int) -> int:
    """x modulo 2^B, as a two's complement word."""
    lo, _ = word_range(bits)
    return (x - lo) % (1 << bits) + lo


@dataclass(frozen=True)
class Program:
    """Instructions (a, b, c) and the initial memory of B-bit words. ``name`` and ``notes`` are for
    reports (what the program computes and where the answer is)."""
    instructions: tuple[tuple[int, int, int], ...]
    memory: tuple[int, ...]
    bits: int
    name: str = "program"
    notes: str = ""
    labels: dict = field(default_factory=dict, compare=False)   # cell name -> address, for reports

    def __post_init__(self) -> None:
        check_program(self.instructions, self.memory, self.bits, self.name)

    @property
    def n_cells(self) -> int:
        return len(self.memory)

    @property
    def n_instructions(self) -> int:
        return len(self.instructions)

    @property
    def halt(self) -> int:
        """The halting address P: one past the last instruction."""
        return len(self.instructions)

    def with_memory(self, memory, bits: int | None = None) -> "Program":
        return Program(self.instructions, tuple(int(v) for v in memory), bits or self.bits, self.name,
                       self.notes, self.labels)


MAX_BITS = 62   # words travel as numpy int64 in the reference; the model's limit is lower (measured)


def check_program(instructions, memory, bits: int, name: str = "program") -> None:
    """Raises ProgramError naming the first offending field, value and the allowed range."""
    if not (isinstance(bits, int) and 2 <= bits <= MAX_BITS):
        raise ProgramError(f"{name}: bits={bits!r} is invalid: expected an integer in [2, {MAX_BITS}]")
    M, P = len(memory), len(instructions)
    if M < 1:
        raise ProgramError(f"{name}: memory is empty: expected at least 1 cell")
    if P < 1:
        raise ProgramError(f"{name}: no instructions: expected at least 1")
    lo, hi = word_range(bits)
    for i, v in enumerate(memory):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ProgramError(f"{name}: mem[{i}]={v!r} is invalid: expected an integer")
        if not lo <= v <= hi:
            raise ProgramError(f"{name}: mem[{i}]={v} is beyond the encodable range: expected an integer "
                               f"in [{lo}, {hi}] for {bits}-bit words")
    for k, ins in enumerate(instructions):
        if len(ins) != 3 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in ins):
            raise ProgramError(f"{name}: instruction {k}={ins!r} is invalid: expected three integers a b c")
        a, b, c = ins
        for field_, v in (("a", a), ("b", b)):
            if not 0 <= v < M:
                raise ProgramError(f"{name}: instruction {k} {field_}={v} is an address outside memory: "
                                   f"expected an integer in [0, {M - 1}]")
        if not 0 <= c <= P:
            raise ProgramError(f"{name}: instruction {k} c={c} is outside the program: expected an integer "
                               f"in [0, {P}] ({P} halts)")


def step(program: Program, memory: np.ndarray, pc: int) -> tuple[np.ndarray, int]:
    """One SUBLEQ instruction at ``pc`` (which must be below P): the new memory and pc."""
    a, b, c = program.instructions[pc]
    mem = memory.copy()
    mem[b] = wrap(int(mem[b]) - int(mem[a]), program.bits)
    return mem, (c if mem[b] <= 0 else pc + 1)


def run_reference(program: Program, max_steps: int) -> list[tuple[np.ndarray, int]]:
    """The states (memory, pc) before the first instruction and after each one, up to the halt
    (pc == P) or ``max_steps`` instructions, whichever comes first."""
    mem, pc = np.array(program.memory, dtype=np.int64), 0
    states = [(mem, pc)]
    while pc != program.halt and len(states) <= max_steps:
        mem, pc = step(program, mem, pc)
        states.append((mem, pc))
    return states


# -- the text format (docs/subleq.md) ------------------------------------------------------------------
def parse_program(text: str, name: str = "program") -> Program:
    """Lines: ``bits B``, ``mem v0 v1 ...`` (repeatable, appends cells), ``cells M`` (pads with zeros),
    and instructions ``a b c``; ``#`` starts a comment. Errors name the line."""
    bits, memory, instructions, cells = None, [], [], None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, *rest = line.split()
        where = f"{name} line {lineno}"
        try:
            values = [int(t) for t in rest]
            if head == "bits" and len(values) == 1:
                bits = values[0]
            elif head == "cells" and len(values) == 1:
                cells = values[0]
            elif head == "mem" and values:
                memory += values
            elif head not in ("bits", "cells", "mem") and not rest[3:] and len(rest) == 2:
                instructions.append((int(head), values[0], values[1]))
            else:
                raise ValueError
        except ValueError:
            raise ProgramError(f"{where}: {raw.strip()!r} is malformed: expected 'bits B', 'cells M', "
                               f"'mem v ...' or an instruction 'a b c' of integers") from None
    if bits is None:
        raise ProgramError(f"{name}: no 'bits B' line: the word width must be given")
    if cells is not None:
        if cells < len(memory):
            raise ProgramError(f"{name}: cells={cells} is below the {len(memory)} words given by 'mem'")
        memory += [0] * (cells - len(memory))
    return Program(tuple(instructions), tuple(memory), bits, name)


def format_program(program: Program) -> str:
    """The text format of ``program`` (parse_program inverts it)."""
    lines = [f"# {program.name}: {program.notes}".rstrip(": "), f"bits {program.bits}",
             "mem " + " ".join(str(v) for v in program.memory)]
    lines += [f"{a} {b} {c}" for a, b, c in program.instructions]
    return "\n".join(lines) + "\n"


def random_program(rng: np.random.Generator, n_cells: int, n_instructions: int, bits: int,
                   name: str = "random") -> Program:
    """Uniform random instructions (c may be P: halt) on a uniform random full-range memory."""
    lo, hi = word_range(bits)
    a = rng.integers(0, n_cells, n_instructions)
    b = rng.integers(0, n_cells, n_instructions)
    c = rng.integers(0, n_instructions + 1, n_instructions)
    mem = rng.integers(lo, hi + 1, n_cells)
    return Program(tuple(zip(a.tolist(), b.tolist(), c.tolist())), tuple(mem.tolist()), bits, name)
