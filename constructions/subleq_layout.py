"""The punchcard of the SUBLEQ looped transformer: which token holds what, in which named rows.

Tokens (rows of h, n = 1 + M + P):

    token          0            1 .. M                  M+1 .. M+P
    role           scratchpad   memory cell j-1         instruction k-M-1
    ----------------------------------------------------------------------------------
    scr, off_scr   1, 0         0, 1                    0, 1
    is_mem, off_mem 0, 1        1, 0                    0, 1
    maddr  (w)                  code(j)                                  address codes, +-1
    iaddr  (w)                                          code(k)
    word   (B)                  mem[j], +-1 bits LSB first, two's complement
    code   (3w)                                         code(a), code(b), code(c)
    pc, nxt (w)    code(pc), code(pc+1)
    abc    (3w)    the fetched instruction's codes
    ibuf   (3w)    attention's raw read of the instruction (cleared by the same layer's FFN)
    va, vb (B)     attention's raw reads of mem[a], mem[b] (cleared by the same layer's FFN)
    delta  (B)     new mem[b] bits minus old ones ({-2, 0, 2}), written into memory by attention
    halt   (1)     1 when pc == P

``code(k)`` is the w-bit binary expansion of k written as +-1 (bit i is 2 * ((k >> i) & 1) - 1), so
two codes have inner product w exactly when equal and at most w - 2 otherwise (Giannou et al.'s
positional encoding). w = max(2, ceil(log2(max(M, P + 1)))): memory and instruction addresses, and
the halting address P, are all encodable. The indicator rows replace the paper's column-dependent
biases (Eq. 1 has one bias for every token).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import Layout
from .subleq_machine import Program, word_range


@dataclass(frozen=True)
class Shape:
    n_cells: int          # M
    n_instructions: int   # P
    bits: int             # B, bits per word
    code_bits: int = 0    # w; 0 = the smallest that encodes every address (at least 2)

    def __post_init__(self) -> None:
        for name in ("n_cells", "n_instructions"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected an integer >= 1")
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 62):
            raise ValueError(f"bits={self.bits!r} is invalid: expected an integer in [2, 62]")
        need = max(2, int(np.ceil(np.log2(max(self.n_cells, self.n_instructions + 1)))))
        if self.code_bits and self.code_bits < need:
            raise ValueError(f"code_bits={self.code_bits} is invalid: M={self.n_cells}, P={self.n_instructions} "
                             f"need at least {need}")
        object.__setattr__(self, "code_bits", self.code_bits or need)

    @staticmethod
    def of(program: Program, code_bits: int = 0) -> "Shape":
        return Shape(program.n_cells, program.n_instructions, program.bits, code_bits)

    @property
    def n_tokens(self) -> int:
        return 1 + self.n_cells + self.n_instructions

    @property
    def memory_tokens(self) -> slice:
        return slice(1, 1 + self.n_cells)

    @property
    def instruction_tokens(self) -> slice:
        return slice(1 + self.n_cells, self.n_tokens)


def layout(shape: Shape) -> Layout:
    w, B = shape.code_bits, shape.bits
    lay = Layout()
    for name in ("scr", "off_scr", "is_mem", "off_mem"):
        lay.add(name, 1)
    lay.add("maddr", w); lay.add("iaddr", w); lay.add("word", B); lay.add("code", 3 * w)
    lay.add("pc", w); lay.add("nxt", w); lay.add("abc", 3 * w); lay.add("ibuf", 3 * w)
    lay.add("va", B); lay.add("vb", B); lay.add("delta", B); lay.add("halt", 1)
    return lay


def code(k: int, w: int) -> np.ndarray:
    """+-1 binary code of k, least significant bit first."""
    return 2.0 * ((k >> np.arange(w)) & 1) - 1.0


def word_bits(v: int, bits: int) -> np.ndarray:
    """+-1 bits of a B-bit two's complement word, least significant first."""
    return code(v % (1 << bits), bits)


def encode(program: Program, shape: Shape | None = None) -> np.ndarray:
    """The punchcard (n, D) of ``program`` before TF_pre: memory, instructions, pc = 0."""
    shape = shape or Shape.of(program)
    if (shape.n_cells, shape.n_instructions, shape.bits) != (program.n_cells, program.n_instructions, program.bits):
        raise ValueError(f"program {program.name!r} has M={program.n_cells}, P={program.n_instructions}, "
                         f"B={program.bits}; the shape expects {shape}")
    lay, w = layout(shape), shape.code_bits
    h = np.zeros((shape.n_tokens, lay.dim))
    mem, ins = shape.memory_tokens, shape.instruction_tokens
    h[0, lay.row("scr")] = 1.0
    h[1:, lay.row("off_scr")] = 1.0
    h[mem, lay.row("is_mem")] = 1.0
    h[:, lay.row("off_mem")] = 1.0
    h[mem, lay.row("off_mem")] = 0.0
    for j, v in enumerate(program.memory):
        h[1 + j, lay["maddr"]] = code(j, w)
        h[1 + j, lay["word"]] = word_bits(v, shape.bits)
    for k, (a, b, c) in enumerate(program.instructions):
        t = ins.start + k
        h[t, lay["iaddr"]] = code(k, w)
        h[t, lay["code"]] = np.concatenate([code(a, w), code(b, w), code(c, w)])
    h[0, lay["pc"]] = code(0, w)
    return h


@dataclass(frozen=True)
class Decoded:
    memory: np.ndarray    # (batch, M) int64
    pc: np.ndarray        # (batch,) int64
    halt: np.ndarray      # (batch,) the halt row, rounded
    margin: np.ndarray    # (batch,) smallest |x| over the decoded +-1 entries (1 = clean; < 1/2: ambiguous)
    finite: np.ndarray    # (batch,) every decoded entry finite


def _bits_to_int(bits01: np.ndarray) -> np.ndarray:
    return (bits01.astype(np.int64) << np.arange(bits01.shape[-1], dtype=np.int64)).sum(-1)


def decode(h: np.ndarray, shape: Shape) -> Decoded:
    """Memory words and pc read by sign from a batch of states (batch, n, D)."""
    h = np.asarray(h, dtype=np.float64)
    lay = layout(shape)
    words = h[:, shape.memory_tokens, lay["word"]]                       # (batch, M, B)
    pcs = h[:, 0, lay["pc"]]                                              # (batch, w)
    unsigned = _bits_to_int(words > 0)
    lo, _ = word_range(shape.bits)
    memory = np.where(unsigned >= -lo, unsigned - (1 << shape.bits), unsigned)
    finite = np.isfinite(words).all(axis=(1, 2)) & np.isfinite(pcs).all(axis=1)
    margin = np.where(finite, np.minimum(np.abs(words).min(axis=(1, 2)), np.abs(pcs).min(axis=1)), 0.0)
    return Decoded(memory, _bits_to_int(pcs > 0), np.rint(h[:, 0, lay.row("halt")]), margin, finite)
