"""SUBLEQ programs for the looped transformer, written with a tiny assembler.

The assembler knows named cells (with initial values) and labels; every macro expands to plain
SUBLEQ(a, b, c) instructions of the paper's variant (``subleq_machine``):

    sub(x, y, to)   mem[y] -= mem[x]; jump to label ``to`` if mem[y] <= 0 (default: the next one)
    clear(x)        mem[x] = 0                      sub(x, x)
    add(x, y)       mem[y] += mem[x]                sub(x, Z); sub(Z, y); clear(Z)
    move(x, y)      mem[y] = mem[x]                 clear(y); add(x, y)
    jump(to)        unconditional                   sub(Z, Z, to)
    jle(x, to)      jump if mem[x] <= 0             sub(Z, x, to)  (mem[x] - 0)

Z is a cell that every macro leaves at 0. Labels resolve to instruction addresses; the label
``HALT`` is P, one past the last instruction. Without indirect addressing (instructions are not in
memory) lists are handled by unrolled code: sorting is a compare-exchange network.
"""
from __future__ import annotations

from .subleq_machine import Program


class Assembler:
    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.cells: dict[str, int] = {}
        self.values: list[int] = []
        self.code: list[tuple[str, str, str | int]] = []   # (cell a, cell b, label or address)
        self.labels: dict[str, int] = {}
        self.cell("Z", 0)

    def cell(self, name: str, value: int = 0) -> str:
        if name in self.cells:
            raise ValueError(f"cell {name!r} is defined twice")
        self.cells[name] = len(self.values)
        self.values.append(value)
        return name

    def label(self, name: str) -> None:
        if name in self.labels or name == "HALT":
            raise ValueError(f"label {name!r} is defined twice")
        self.labels[name] = len(self.code)

    # -- macros ------------------------------------------------------------------------------
    def sub(self, x: str, y: str, to: str | None = None) -> None:
        self.code.append((x, y, to if to is not None else len(self.code) + 1))

    def clear(self, x: str) -> None:
        self.sub(x, x)

    def add(self, x: str, y: str) -> None:
        self.sub(x, "Z"); self.sub("Z", y); self.clear("Z")

    def move(self, x: str, y: str) -> None:
        self.clear(y); self.add(x, y)

    def jump(self, to: str) -> None:
        self.sub("Z", "Z", to)

    def jle(self, x: str, to: str) -> None:
        self.sub("Z", x, to)

    def assemble(self, name: str, notes: str = "") -> Program:
        labels = {**self.labels, "HALT": len(self.code)}
        try:
            ins = tuple((self.cells[a], self.cells[b], c if isinstance(c, int) else labels[c])
                        for a, b, c in self.code)
        except KeyError as e:
            raise ValueError(f"{name}: unknown cell or label {e.args[0]!r}") from None
        return Program(ins, tuple(self.values), self.bits, name, notes, dict(self.cells))


def negate(x: int = 37, bits: int = 8) -> Program:
    asm = Assembler(bits)
    asm.cell("x", x); asm.cell("y", 5)
    asm.clear("y"); asm.sub("x", "y")
    return asm.assemble("negate", "y = -x")


def add(x: int = 25, y: int = -61, bits: int = 8) -> Program:
    asm = Assembler(bits)
    asm.cell("x", x); asm.cell("y", y)
    asm.add("x", "y")
    return asm.assemble("add", "y = x + y (wrapped)")


def _multiply_into(asm: Assembler, x: str, y: str, p: str, cnt: str, tag: str) -> None:
    """p = x * y for y >= 0 by repeated addition (cnt is scratch)."""
    asm.clear(p); asm.move(y, cnt)
    asm.label(f"{tag}_loop"); asm.jle(cnt, f"{tag}_end")
    asm.add(x, p); asm.sub("ONE", cnt); asm.jump(f"{tag}_loop")
    asm.label(f"{tag}_end")


def multiply(x: int = 7, y: int = 9, bits: int = 8) -> Program:
    asm = Assembler(bits)
    asm.cell("ONE", 1); asm.cell("x", x); asm.cell("y", y); asm.cell("p", 0); asm.cell("cnt", 0)
    _multiply_into(asm, "x", "y", "p", "cnt", "mul")
    return asm.assemble("multiply", "p = x * y (y >= 0)")


def factorial(n: int = 5, bits: int = 8) -> Program:
    """f = n! with an outer loop over i = n..1 and an inner multiplication loop (branches in both)."""
    asm = Assembler(bits)
    asm.cell("ONE", 1); asm.cell("n", n); asm.cell("f", 1); asm.cell("i", 0)
    asm.cell("p", 0); asm.cell("cnt", 0)
    asm.move("n", "i")
    asm.label("outer"); asm.jle("i", "HALT")
    _multiply_into(asm, "f", "i", "p", "cnt", "mul")
    asm.move("p", "f"); asm.sub("ONE", "i"); asm.jump("outer")
    return asm.assemble("factorial", "f = n! (n >= 0)")


def sort(values=(9, -4, 17, 0, -12), bits: int = 8) -> Program:
    """Sorts cells v0..v{k-1} ascending with an unrolled odd-even transposition network (k rounds).
    Compare-exchange(x, y): t = y - x; if t <= 0 swap. Values must lie in [-2^(B-2), 2^(B-2)) so
    that y - x does not wrap."""
    asm = Assembler(bits)
    names = [asm.cell(f"v{i}", v) for i, v in enumerate(values)]
    asm.cell("t", 0)
    k = 0
    for r in range(len(values)):
        for i in range(r % 2, len(values) - 1, 2):
            x, y = names[i], names[i + 1]
            asm.move(y, "t"); asm.sub(x, "t", f"swap{k}"); asm.jump(f"done{k}")
            asm.label(f"swap{k}"); asm.move(x, "t"); asm.move(y, x); asm.move("t", y)
            asm.label(f"done{k}")
            k += 1
    return asm.assemble("sort", f"v0..v{len(values) - 1} sorted ascending")


PROGRAMS = {"negate": negate, "add": add, "multiply": multiply, "factorial": factorial, "sort": sort}


def expected_result(program: Program, memory) -> tuple[bool, str]:
    """Whether the final memory holds what the named program computes (an independent check of the
    programs themselves, beside the step-by-step comparison with the interpreter)."""
    from math import factorial as fact
    from .subleq_machine import wrap
    c, m, B = program.labels, [int(v) for v in memory], program.bits
    init = program.memory
    want = {"negate": lambda: [("y", wrap(-init[c["x"]], B))],
            "add": lambda: [("y", wrap(init[c["x"]] + init[c["y"]], B))],
            "multiply": lambda: [("p", wrap(init[c["x"]] * init[c["y"]], B))],
            "factorial": lambda: [("f", wrap(fact(init[c["n"]]), B))],
            "sort": lambda: [(f"v{i}", v) for i, v in enumerate(sorted(init[c[f"v{j}"]]
                                                                      for j in range(len(c) - 2)))]}
    if program.name not in want:
        return True, "no expected result for a loaded program"
    pairs = want[program.name]()
    ok = all(m[c[k]] == v for k, v in pairs)
    return ok, ", ".join(f"{k}={m[c[k]]}" + ("" if m[c[k]] == v else f" (expected {v})") for k, v in pairs)
