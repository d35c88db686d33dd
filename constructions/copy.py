"""Lemma A.3: a q-head block that copies the previous q tokens onto every token.

Lemma A.3 (paper): a one-layer q-head transformer copies x_{t-1}, ..., x_{t-q} onto token t; the
feed-forward network, reading the index row, zeroes the slots with t - i < 0.

Prompt (tokens as rows, t = 0 .. N-1; Thm 3.2 appends a test token t = N and a sink t = N + 1):

    token      0         1          ...   t            test (N)     sink (N+1)
    xt         x_0       x_1              x_t          0            0
    pos        p_0       p_1              p_t          p_N          p_{N+1}     (Lemma A.1 sign vectors)
    shift[i]   p_{-i}    p_{1-i}          p_{t-i}      p_{N-i}      p_{N+1-i}   i = 1 .. q
    index      0         1                t            N            N + 1
Registers added here:
    win        [x_{t-q}, ..., x_{t-1}]  (q blocks of d rows, oldest first, as ``tasks.ar_sequence``)
    no_prev1 .. no_prevq   one row each: no_prev{i} = 1 where t < i (slot i has no earlier token), else 0

Layer 1 (q heads + FFN):
    head i: query (beta/m) shift[i], key pos, value xt -> block q-i of win. The score of key s is
        beta p_{t-i}.p_s: beta at s = t - i, at most beta (1 - margin) elsewhere.
    FFN: no_prev{i} <- relu(i - t) - relu(i - 1 - t), which is 1 for t < i and 0 for t >= i,
        exactly (t is a small integer).
Layer 2 (FFN only): block q-i of win <- 0 where no_prev{i} = 1 (the ``gadgets.zero_where`` units
    with one gate row per block; exact while |x| <= x_bound).

Error (Lemma A.1 with groups of one token): every key but s = t - i gets weight <= e^{-beta margin},
so for t >= i
    |win_{t,i} - x_{t-i}| <= 2 (n - 1) e^{-beta margin} max|x|        (``copy_error_bound``)
and the copy is exact in floating point once beta margin >= 800 with beta/m a power of two
(``embeddings.exact_pairing_beta``): the other weights underflow to 0, the target's is exactly 1.

Where this differs from the printed Lemma A.3, and why:
  * One more layer, an FFN without heads. The gate [t >= i] is piecewise linear in the index row,
    but slot * gate is not exact in one ReLU hidden layer: the offsets B (t - i) that would switch
    the slot off meet the slot value inside the same units and round it. The first FFN forms the
    0/1 gates exactly, the second zeroes with them exactly.
  * The shifted rows need embeddings of the positions -q .. -1 as well, so N + q (+ 2) vectors
    are drawn. No token carries those, so an empty slot's query matches no key: its attention is
    spread over every token, and only the FFN makes it 0 (tested: the slot is nonzero before it).
  * The paper's x_0 .. x_N becomes x_0 .. x_{N-1} here (N tokens); Thm 3.2 renames them x_1 .. x_N.
  * Optional partner tokens (for Thm 3.2 with the mirror scheme): each value token is followed by
    a token with xt = 0 and the same position rows, so it gathers the same window; the copy heads
    then meet two keys per position and carry the value 2 xt (exact: weights 1/2 each).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embeddings import exact_pairing_beta, min_margin, pairing_error_bound, quasi_orthogonal
from .gd import check_sizes
from .layout import Layout
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights


def sequence_layout(d: int, q: int, pos_dim: int, test_slot: bool = False, partners: bool = False) -> Layout:
    """Prompt rows of the sequence prompt and the copy block's registers (test/sink rows for Thm 3.2;
    is_x / is_partner rows when every value token is followed by a partner token)."""
    lay = Layout()
    lay.add("xt", d)
    lay.add("pos", pos_dim)
    lay.add("shift", q * pos_dim)
    lay.add("index", 1)
    if test_slot:
        for name in ("is_test", "is_sink", "one"):
            lay.add(name, 1)
    if partners:
        lay.add("is_x", 1)
        lay.add("is_partner", 1)
    lay.add("win", q * d)
    for i in range(1, q + 1):
        lay.add(gate(i), 1)
    return lay


def gate(i: int) -> str:
    """Name of the row that is 1 where slot i (x_{t-i}) has no earlier token."""
    return f"no_prev{i}"


def window_size(layout: Layout) -> int:
    """q of a layout made by ``sequence_layout``."""
    return layout.size("win") // layout.size("xt")


def n_embeddings(N: int, q: int, test_slot: bool) -> int:
    """Positions -q .. N-1 (and N, N+1 for the test token and the sink)."""
    return N + q + (2 if test_slot else 0)


def encode_sequence(layout: Layout, P: np.ndarray, q: int, x: np.ndarray, test_slot: bool = False) -> np.ndarray:
    """x (B, N, d) -> tokens (B, N [+ 2], D), float64. Embedding of position t is P[t + q].

    With an ``is_partner`` row in the layout, value token t sits at 2t and is followed by a partner
    token (xt = 0, the same position rows): (B, 2N [+ 2], D)."""
    x = np.asarray(x, float)
    if x.ndim != 3:
        raise ValueError(f"x has shape {x.shape}, expected (B, N, d)")
    B, N, d = x.shape
    if d != layout.size("xt"):
        raise ValueError(f"data of dimension d={d} does not fit the layout (d={layout.size('xt')})")
    if P.shape[0] < N + q + (2 if test_slot else 0):
        raise ValueError(f"N={N} tokens but the construction has embeddings for {P.shape[0] - q - (2 if test_slot else 0)}")
    k = 2 if "is_partner" in layout else 1                      # tokens per value
    t = np.r_[np.repeat(np.arange(N), k), np.arange(N, N + 2) if test_slot else []].astype(int)  # position of each token
    m = P.shape[1]
    Pf = P.astype(float)
    h = np.zeros((B, len(t), layout.dim))
    h[:, 0:k * N:k, layout["xt"]] = x
    h[:, :, layout["pos"]] = Pf[t + q]
    shift = layout["shift"].start
    for i in range(1, q + 1):
        h[:, :, shift + (i - 1) * m:shift + i * m] = Pf[t - i + q]
    h[:, :, layout.row("index")] = t
    if k == 2:
        h[:, 0:2 * N:2, layout.row("is_x")] = 1.0
        h[:, 1:2 * N:2, layout.row("is_partner")] = 1.0
    if test_slot:
        h[:, k * N, layout.row("is_test")] = 1.0
        h[:, k * N + 1, layout.row("is_sink")] = 1.0
        h[:, :, layout.row("one")] = 1.0
    return h


def slot(layout: Layout, i: int, reg: str = "win", src: str = "xt") -> slice:
    """Rows of block q - i of ``reg``: where x_{t-i} lands (oldest first)."""
    d, q = layout.size(src), window_size(layout)
    start = layout[reg].start + (q - i) * d
    return slice(start, start + d)


def copy_heads(layout: Layout, q: int, beta: float, src: str = "xt", dst: str = "win") -> tuple[HeadWeights, ...]:
    """Head i: query (beta/m) shift[i], key pos, value xt -> slot i. With partner tokens the query
    meets two keys (the value token and its partner, xt = 0), each with weight 1/2: value 2 xt."""
    m = layout.size("pos")
    scale = 2.0 if "is_partner" in layout else 1.0
    shift = layout["shift"].start
    heads = []
    for i in range(1, q + 1):
        query = np.zeros((m, layout.dim)); key = np.zeros((m, layout.dim)); value = np.zeros((layout.dim, layout.dim))
        query[:, shift + (i - 1) * m:shift + i * m] = (beta / m) * np.eye(m)
        key[:, layout["pos"]] = np.eye(m)
        value[slot(layout, i, dst, src), layout[src]] = scale * np.eye(layout.size(src))
        heads.append(HeadWeights(query, key, value, f"copy[t-{i}]"))
    return tuple(heads)


def no_prev_gates(layout: Layout, q: int) -> FFNWeights:
    """no_prev{i} += relu(i - t) - relu(i - 1 - t) for i = 1..q: exactly [t < i] on integer t."""
    w1 = np.zeros((2 * q, layout.dim)); b1 = np.zeros(2 * q); w2 = np.zeros((layout.dim, 2 * q))
    for i in range(1, q + 1):
        a, b = 2 * (i - 1), 2 * (i - 1) + 1
        w1[a, layout.row("index")] = -1.0; b1[a] = i
        w1[b, layout.row("index")] = -1.0; b1[b] = i - 1
        w2[layout.row(gate(i)), a] = 1.0
        w2[layout.row(gate(i)), b] = -1.0
    return FFNWeights(w1, b1, w2, np.zeros(layout.dim))


def zero_empty_slots(layout: Layout, q: int, bound: float, src: str = "xt", dst: str = "win") -> FFNWeights:
    """Block q-i of ``dst`` <- 0 where no_prev{i} = 1, unchanged where 0 (``zero_where`` per block):
    FFN output = [relu(s - B g) - relu(-s - B g)] - [relu(s) - relu(-s)] = s (1 - g) - s."""
    if not bound > 0:
        raise ValueError(f"bound={bound!r} is invalid: expected a float > 0")
    d = layout.size(src)
    k = q * d
    w1 = np.zeros((4 * k, layout.dim)); w2 = np.zeros((layout.dim, 4 * k))
    eye = np.eye(d)
    for i in range(1, q + 1):
        rows, u = slot(layout, i, dst, src), (q - i) * d
        g = layout.row(gate(i))
        for part, sign, gated in ((0, 1.0, True), (1, -1.0, True), (2, 1.0, False), (3, -1.0, False)):
            units = slice(part * k + u, part * k + u + d)
            w1[units, rows] = sign * eye
            if gated:
                w1[units, g] = -bound
            w2[rows, units] = (sign if gated else -sign) * eye
    return FFNWeights(w1, np.zeros(4 * k), w2, np.zeros(layout.dim))


def copy_block(layout: Layout, q: int, beta: float, x_bound: float, src: str = "xt",
               dst: str = "win") -> tuple[LayerWeights, LayerWeights]:
    """Lemma A.3: (q copy heads + gate FFN, zeroing FFN); ``win`` holds [x_{t-q}, ..., x_{t-1}]."""
    if layout.size(dst) != q * layout.size(src) or gate(q) not in layout:
        raise ValueError(f"layout does not hold q={q} slots of {src!r} in {dst!r}")
    if not beta > 0:
        raise ValueError(f"beta={beta!r} is invalid: expected a float > 0")
    return (LayerWeights(heads=copy_heads(layout, q, beta, src, dst), ffn=no_prev_gates(layout, q), name="copy"),
            LayerWeights(ffn=zero_empty_slots(layout, q, x_bound, src, dst), name="zero-empty-slots"))


def copy_error_bound(n: int, beta: float, margin: float, max_x: float, group: int = 1) -> float:
    """Bound on |win_{t,i} - x_{t-i}| over the slots with t >= i (module docstring); ``group`` = 2 with
    partner tokens (then the value is 2 x and the bound is the pairing head's)."""
    return pairing_error_bound(n, group, beta, margin, group * max_x)


def default_beta(pos_dim: int, eps: float) -> float:
    return exact_pairing_beta(pos_dim, eps)


def window_reference(x: np.ndarray, q: int) -> np.ndarray:
    """numpy: (B, N, d) -> (B, N, q*d) with row t = [x_{t-q}, ..., x_{t-1}], x_s = 0 for s < 0."""
    B, N, d = x.shape
    padded = np.concatenate([np.zeros((B, q, d)), x], axis=1)
    return np.stack([padded[:, t:t + q].reshape(B, q * d) for t in range(N)], axis=1)


@dataclass(frozen=True)
class SequenceConstruction(Construction):
    """A Construction fed a sequence x (B, N, d) instead of a regression prompt."""
    q: int = 1
    test_slot: bool = False

    def encode(self, x: np.ndarray, y=None, x_test=None) -> np.ndarray:
        N = np.asarray(x).shape[1]
        if N != self.assumptions.get("N", N):
            raise ValueError(f"N={N} values, but the construction was built for N={self.assumptions['N']}")
        return encode_sequence(self.layout, self.pos, self.q, x, self.test_slot)


def copy_construction(d: int, N: int, q: int, beta: float | None = None, x_bound: float = 100.0,
                      pos_eps: float = 0.1, seed: int = 0) -> SequenceConstruction:
    """Lemma A.3 on its own: TF_pre = the copy block; read ``win`` on every token."""
    check_sizes(d=d, N=N, q=q)
    P = quasi_orthogonal(n_embeddings(N, q, False), pos_eps, seed)
    lay = sequence_layout(d, q, P.shape[1])
    beta = default_beta(P.shape[1], pos_eps) if beta is None else beta
    w = AlgoFormerWeights(lay, pre=copy_block(lay, q, beta, x_bound), loop=(), post=(),
                          notes={"algorithm": "copy", "d": d, "N": N, "q": q, "beta": beta})
    read = Readout("win", slice(None))
    return SequenceConstruction(w, P, answer=read, iterate=read, q=q,
                                assumptions={"N": N, "x_bound": x_bound, "beta": beta, "margin": min_margin(P)})
