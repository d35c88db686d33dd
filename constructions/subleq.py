"""A looped transformer that executes one SUBLEQ instruction per loop (Giannou et al. 2023, "Looped
Transformers as Programmable Computers", arXiv 2301.13196, Sec. 5), compiled into the AlgoFormer:
TF_pre = [fetch], TF_loop = [execute, fetch]. Punchcard layout: ``subleq_layout``. Every layer is
Eq. 1 (softmax attention at temperature lam, residual ReLU FFN); lam enters only the query maps.

    execute   attention  read_a: query lam*code(a) . key maddr -> va = mem[a] (approximately)
                         read_b: query lam*code(b) . key maddr -> vb = mem[b]
              FFN        subtract, branch, and error-correct in one ReLU layer, from the raw reads:
                         delta = bits(wrap(mem[b] - mem[a])) - bits(mem[b]), pc <- c if the result
                         <= 0 else pc + 1; va, vb cleared
    fetch     attention  write:    memory token j, query 2 lam code(j), attends to the scratchpad
                                   (key code(b)) iff j == b, else to the rest (key 2 lam (w-1)):
                                   word_b += delta
                         read_ins: query lam*pc . key iaddr -> ibuf = the next instruction's codes
              FFN        error correction: words, pc <- exact +-1; abc <- sat(ibuf); nxt <- pc + 1;
                         halt <- [pc == P]; ibuf, delta cleared

Why this design (2 layers per instruction, the paper has 10, anadim/subleq-transformer 4):
- The subtraction needs no two's complement negation (the paper's 3 blocks: flip, add 1, add): bit i
  of (mem[b] - mem[a]) mod 2^B depends only on the integer s_i = sum_{j<=i} 2^j (b_j - a_j)
  in (-2^(i+1), 2^(i+1)), and equals [s_i >= -2^i] - [s_i >= 0] + [s_i >= 2^i]: 3 steps.
- A step [s >= t] of an integer s is clamp01(K (s - t + 1/2)) = relu(z + 1/2) - relu(z - 1/2): exactly
  0 or 1 whenever s is within tol = 1/2 - 1/(2K) of an integer. So the FFN can work on the raw
  (softmax-blurred) reads and still output exact bits: reading and error correction share a layer.
- The branch flag [wrap(d) <= 0] of d = mem[b] - mem[a] is 3 steps of d, and flag * (c_i - nxt_i)
  is a step whose argument gets L (c_i - nxt_i)/2 - L (closed unless c_i - nxt_i = 2; the mirror unit
  takes -2): the branch also fits in the same FFN, without the flag ever being stored.
- Writing mem[b] and fetching the next instruction are two heads of one attention layer; the loop
  boundary sits after the fetch, so after every loop the memory is written and pc is the next pc.
A loop needs at least these two attention layers (the memory reads depend on the fetched addresses;
the write depends on the FFN's subtraction), so two layers per instruction is the minimum for this
scheme. TF_pre is the fetch layer alone (it fetches instruction 0; its write adds delta = 0).

Halting: after ``halt`` is set, execute's FFN units are all closed (gate -G * halt) and the state is a
fixed point: more loops change neither memory nor pc. The driver checks halt between loops.

Where this departs from the printed construction and its public code (jysohn1108/Looped-Transformer):
1. Column-dependent biases: the code's FFN biases b1, b2 act on column 0 (the scratchpad) only; Eq. 1
   has one bias for all tokens. Here constants come from units reading indicator rows (scr, is_mem),
   and gates from -G * off_scr. ``printed=True`` puts the constants in the shared bias b2, which is
   what the printed biases become under Eq. 1: the machine then fails (tests/test_subleq.py).
2. The error correction's width eps is computed from the state itself (``np.amax`` over X) and W2
   scales by 1/(1 - 2 eps): a weight that depends on the input, and unbounded as eps -> 1/2. Here the
   width is fixed (exact for any entry within 1/2 of +-1) and the tolerance is derived (lambda_bound).
3. The code's softmax exp(lam s) / sum exp(lam s) does not subtract the maximum: it overflows once
   lam * w exceeds ~88 (float32) or ~709 (float64). The model's softmax is the stable one; the test
   shows the printed formula returning NaN where this one is exact.
4. The code draws memory only from [-2^(B-2), 2^(B-2) - 2]: wrap-around is never exercised. Here words
   use the whole B-bit range and the tests include overflowing subtractions.
"""
from __future__ import annotations

import math

import numpy as np

from .layout import Layout
from .subleq_layout import Shape, code, layout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

K = 4.0                        # slope of every step: tolerance 1/2 - 1/(2K) on the integer it reads
TOL = 0.5 - 0.5 / K            # 3/8


class _Units:
    """The hidden units of one FFN, each relu(sum_r w_r h_r + bias) with its output column."""

    def __init__(self, lay: Layout, printed: bool) -> None:
        self.lay, self.printed = lay, printed
        self.w1, self.b1, self.w2 = [], [], []
        self.b2 = np.zeros(lay.dim)

    def unit(self, inp: dict, bias: float, out: dict) -> None:
        w, o = np.zeros(self.lay.dim), np.zeros(self.lay.dim)
        for r, v in inp.items():
            w[r] += v
        for r, v in out.items():
            o[r] += v
        self.w1.append(w); self.b1.append(bias); self.w2.append(o)

    def clamp01(self, inp: dict, bias: float, out: dict) -> None:
        """out += weight * clamp(z + 1/2, 0, 1): 0 for z <= -1/2, 1 for z >= 1/2."""
        self.unit(inp, bias + 0.5, out)
        self.unit(inp, bias - 0.5, {r: -v for r, v in out.items()})

    def identity(self, row: int, out: dict, gate: dict | None = None) -> None:
        """out += weight * h[row] (exact: relu(x) - relu(-x)); closed where the gate is negative."""
        self.unit({row: 1.0, **(gate or {})}, 0.0, out)
        self.unit({row: -1.0, **(gate or {})}, 0.0, {r: -v for r, v in out.items()})

    def constant(self, indicator: str, out: dict) -> None:
        """out += weight on tokens whose indicator row is 1. printed=True: in the shared bias b2."""
        if self.printed:
            for r, v in out.items():
                self.b2[r] += v
        else:
            self.unit({self.lay.row(indicator): 1.0}, 0.0, out)

    def build(self) -> FFNWeights:
        return FFNWeights(np.array(self.w1), np.array(self.b1), np.array(self.w2).T, self.b2)


def _rows(lay: Layout, name: str) -> list[int]:
    return list(range(lay[name].start, lay[name].stop))


def _head(lay: Layout, name: str, q: list[tuple[int, float]], k: list[int], v: list[tuple[int, int]]) -> HeadWeights:
    """q[i] = (row, coefficient) pairs with key row k[i]; v = (dst, src) pairs of the value map."""
    query, key, value = np.zeros((len(q), lay.dim)), np.zeros((len(k), lay.dim)), np.zeros((lay.dim, lay.dim))
    for i, ((r, c), kr) in enumerate(zip(q, k)):
        query[i, r], key[i, kr] = c, 1.0
    for dst, src in v:
        value[dst, src] = 1.0
    return HeadWeights(query, key, value, name)


def _read(lay: Layout, name: str, qrows: list[int], krows: list[int], src: str, dst: str, lam: float) -> HeadWeights:
    return _head(lay, name, [(r, lam) for r in qrows], krows, list(zip(_rows(lay, dst), _rows(lay, src))))


def fetch_layer(shape: Shape, lam: float, printed: bool = False) -> LayerWeights:
    lay, w = layout(shape), shape.code_bits
    b_rows = _rows(lay, "abc")[w:2 * w]
    write = _head(lay, "write mem[b]", [(r, 2 * lam) for r in _rows(lay, "maddr")] + [(lay.row("is_mem"), 2 * lam * (w - 1))],
                  b_rows + [lay.row("off_scr")], list(zip(_rows(lay, "word"), _rows(lay, "delta"))))
    read_ins = _read(lay, "read instruction", _rows(lay, "pc"), _rows(lay, "iaddr"), "code", "ibuf", lam)
    u = _Units(lay, printed)
    off_mem, off_scr = lay.row("off_mem"), lay.row("off_scr")
    for r in _rows(lay, "word"):                                  # error correction of memory
        u.clamp01({r: 1.0, off_mem: -8.0}, 0.0, {r: 2.0})
        u.constant("is_mem", {r: -1.0})
        u.identity(r, {r: -1.0})
    for src, dst in zip(_rows(lay, "ibuf"), _rows(lay, "abc")):  # the fetched instruction, exact
        u.clamp01({src: 1.0, off_scr: -4.0}, 0.0, {dst: 2.0})
        u.constant("scr", {dst: -1.0})
        u.identity(dst, {dst: -1.0})
        u.identity(src, {src: -1.0})
    pc = _rows(lay, "pc")
    for r in pc:
        u.clamp01({r: 1.0, off_scr: -4.0}, 0.0, {r: 2.0})
        u.constant("scr", {r: -1.0})
        u.identity(r, {r: -1.0})
    gate = {off_scr: -K * 2.0 ** (w + 3)}
    for i, dst in enumerate(_rows(lay, "nxt")):                  # nxt = pc + 1
        s = {pc[j]: 2.0 ** (j - 1) for j in range(i + 1)}        # s_i - const, the low bits of pc, +1
        s_const = (2.0 ** (i + 1) - 1) / 2 + 1
        for t, sign in ((2.0 ** i, 2.0), (2.0 ** (i + 1), -2.0)):
            u.clamp01({**{r: K * c for r, c in s.items()}, **gate}, K * (s_const - t + 0.5), {dst: sign})
        u.constant("scr", {dst: -1.0})
        u.identity(dst, {dst: -1.0})
    halt = lay.row("halt")                                        # halt = [pc == P]
    p_code = code(shape.n_instructions, w)
    u.clamp01({**{r: c for r, c in zip(pc, p_code)}, off_scr: -4.0 * w}, -(w - 1.0), {halt: 1.0})
    u.identity(halt, {halt: -1.0})
    for r in _rows(lay, "delta"):
        u.identity(r, {r: -1.0})
    return LayerWeights((write, read_ins), u.build(), name="fetch")


def execute_layer(shape: Shape, lam: float, printed: bool = False) -> LayerWeights:
    lay, w, B = layout(shape), shape.code_bits, shape.bits
    abc = _rows(lay, "abc")
    read_a = _read(lay, "read mem[a]", abc[:w], _rows(lay, "maddr"), "word", "va", lam)
    read_b = _read(lay, "read mem[b]", abc[w:2 * w], _rows(lay, "maddr"), "word", "vb", lam)
    u = _Units(lay, printed)
    va, vb, delta = _rows(lay, "va"), _rows(lay, "vb"), _rows(lay, "delta")
    L = K * 2.0 ** (B + 1)                                          # > |K (d - t + 1/2)| + 1/2
    G = 4.0 * L                                                     # closes every unit off the scratchpad / once halted
    gate = {lay.row("off_scr"): -G, lay.row("halt"): -G}
    diff = lambda j, c: {vb[j]: c, va[j]: -c}                        # c * (b_j - a_j) in +-1 bits
    for i in range(B):                                              # delta = bits(mem[b] - mem[a]) - bits(mem[b])
        s = {}
        for j in range(i + 1):
            s.update(diff(j, K * 2.0 ** (j - 1)))
        for t, sign in ((-2.0 ** i, 2.0), (0.0, -2.0), (2.0 ** i, 2.0)):
            u.clamp01({**s, **gate}, K * (0.5 - t), {delta[i]: sign})
        u.clamp01({vb[i]: 1.0, **gate}, 0.0, {delta[i]: -2.0})    # - sat(vb_i); the constants cancel
    d = {}
    for j in range(B):                                              # d = mem[b] - mem[a], two's complement
        d.update(diff(j, K * (2.0 ** (j - 1) if j < B - 1 else -2.0 ** (B - 2))))
    pc, nxt, c_rows = _rows(lay, "pc"), _rows(lay, "nxt"), abc[2 * w:]
    for i in range(w):                                              # pc <- nxt + flag * (c - nxt)
        y = {c_rows[i]: L / 2, nxt[i]: -L / 2}
        for t, sign in ((-2.0 ** (B - 1), 2.0), (1.0, -2.0), (2.0 ** (B - 1), 2.0)):
            u.clamp01({**d, **y, **gate}, K * (0.5 - t) - L, {pc[i]: sign})
            u.clamp01({**d, **{r: -c for r, c in y.items()}, **gate}, K * (0.5 - t) - L, {pc[i]: -sign})
        u.unit({nxt[i]: 1.0, pc[i]: -1.0, **gate}, 0.0, {pc[i]: 1.0})     # + (nxt - pc)
        u.unit({nxt[i]: -1.0, pc[i]: 1.0, **gate}, 0.0, {pc[i]: -1.0})
    for r in va + vb:
        u.identity(r, {r: -1.0})
    return LayerWeights((read_a, read_b), u.build(), name="execute")


def build(shape: Shape, lam: float, printed: bool = False) -> AlgoFormerWeights:
    """The SUBLEQ looped transformer for programs of ``shape`` at temperature ``lam``."""
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam={lam!r} is invalid: expected a finite float > 0")
    fetch = fetch_layer(shape, lam, printed)
    return AlgoFormerWeights(layout(shape), pre=(fetch,), loop=(execute_layer(shape, lam, printed), fetch),
                             post=(), notes={"lam": lam, "shape": shape, "printed": printed})


def _leak(w: int, lam: float, n_far: int) -> float:
    """Attention weight a read puts off its target: at most C(w, h) keys at Hamming distance h (score
    gap 2 lam h) and ``n_far`` keys with score 0 (gap lam w)."""
    near = sum(math.comb(w, h) * math.exp(-2 * lam * h) for h in range(1, w + 1))
    return near + n_far * math.exp(-lam * w)


def read_leak(shape: Shape, lam: float) -> float:
    """Off-target weight of the memory reads (the 1 + P non-memory tokens score 0)."""
    return _leak(shape.code_bits, lam, 1 + shape.n_instructions)


def write_leak(shape: Shape, lam: float) -> float:
    """Weight memory token b leaves on the n - 2 other non-scratchpad tokens (gap 2 lam each)."""
    x = (shape.n_tokens - 2) * math.exp(-2 * lam)
    return x / (1 + x)


def lambda_bound(shape: Shape) -> float:
    """The smallest lam for which the analysis guarantees exact execution in exact arithmetic (rounding
    is not in the bound), the largest of three conditions:
      subtract: d = sum_j c_j (b_j - a_j) with sum |c_j| < 2^(B-1), each read bit off by at most
                2 read_leak, so 2^(B+1) read_leak < TOL (the steps' tolerance);
      write:    word_b + (1 - write_leak) delta must stay within 1/2 of the new bit: 2 write_leak < 1/2;
      fetch:    each fetched code bit within 1/2 of +-1: 2 leak < 1/2 (P instruction tokens, 1 + M far).
    Each holds from its threshold on (the leaks decrease in lam): solved by bisection."""
    w = shape.code_bits
    conds = (lambda lam: 2.0 ** (shape.bits + 1) * read_leak(shape, lam) < TOL,
             lambda lam: 2 * write_leak(shape, lam) < 0.5,
             lambda lam: 2 * _leak(w, lam, 1 + shape.n_cells) < 0.5)
    ok = lambda lam: all(c(lam) for c in conds)
    lo, hi = 0.0, 1.0
    while not ok(hi):
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
