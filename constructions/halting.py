"""Loops that halt: a convergence gadget that sets a flag once the iterate stops moving.

The AlgoFormer of Eq. 2 runs a fixed number T of loops. An algorithm such as GD (Lemma A.2) or
Newton-Schulz (Lemma A.4) is usually run *until its update is below a tolerance*. This module adds
three layers to any construction (one to TF_pre, two to TF_loop) that write that test into a flag
row ``halt`` of every token; the model is told the row and a threshold (``algoformer.halting.Halting``)
and stops an example's loop once the flag is on for all its tokens (``AlgoFormer.forward_halting``).
The paper has no halting; this is our addition, not a lemma of it.

Why one flag per example, not per token: a per-token latch (token j's flag set once *its* update is
small) halts when every token has been small at *some* loop, not at the same one. GD's per-token
updates are not monotone (a residual's update passes through 0), so that rule stopped 6 loops early
on one of 16 seeded problems (problem 14, seed 0, tol 1e-3: 52 loops against numpy's 58; found by
running it). The head below makes the test one conjunction over the tokens at one loop.

What is measured. The iterate register ``reg`` (``Construction.iterate``: ``r`` for GD, holding
A_k x_i - y_i on the x-tokens and A_k x_test on the test token; ``Mx`` for Newton, holding M_k x_i on
the x-tokens) *as the tokens hold it*, after each loop: the update of loop k on token j, row q, is
delta_{jq} = reg_k - reg_{k-1}, and the test is its L_inf norm over the example:
max_{j, q} |delta_{jq}| <= tol. Tokens with an ``off`` indicator (those that hold no iterate) are not
tested. The flag is one per example (every token holds the same value): an attention head sums the
tokens' excesses, so "every token converged" is decided at one loop, for all tokens together.

Registers (appended to the construction's layout; its own layers never read them):

    prev     size(reg)   reg_{k-1}: a snapshot of the iterate before the loop (0 between layers 2 and 3)
    excess   1           E_j = sum_q relu(|delta_jq| - tol), token j's excess over the tolerance
    total    1           E = sum_j E_j, the example's excess (every token holds it)
    halt     1           the flag: 0 until the example's update is small, then 1 for good

Layers (s = size(reg), n tokens, G = 2 register_bound the gate, w = ``ramp``):

    TF_pre  + snapshot   FFN  prev += reg                                   2s units (exact: prev is 0)
    TF_loop + measure    FFN  excess += sum_q relu(+-(reg_q - prev_q) - tol - G off)   2s units
                              prev -= prev                                  2s units (exact: prev <- 0)
            + latch      head total += n mean_j excess_j (scores 0: uniform weights 1/n)
                         FFN  halt += relu(1 - total / w - halt)            1 unit
                              excess -= excess, total -= total              4 units (exact)
                              prev += reg                                   2s units (exact: next snapshot)

Width: the model's D grows by s + 3; TF_pre gains 1 layer (2s hidden units), TF_loop 2 layers (4s
hidden units; 1 head of k = 1 and 2s + 5 hidden units). The gated units are ``gadgets.gated_copy``'s
trick: where an ``off`` indicator is 1 they are 0 while |reg - prev| <= G, i.e. |reg| <= register_bound.
The uniform head needs a full (encoder) mask, which the GD and Newton constructions have.

Why the latch keeps the flag set: halt' = halt + relu(1 - E/w - halt) = max(halt, relu(1 - E/w)) for
halt >= 0 (if 1 - E/w < 0 both sides are halt). So the flag never falls, and once it is 1 it stays 1
(relu(-E/w) = 0): an example that were looped further (a fixed-T run) keeps its flag.

Error of the gadget (exact arithmetic). With threshold tau (``Halting.threshold``, 0.5), the flag
turns on at the first loop where E < (1 - tau) w. Every |delta_jq| <= tol gives E = 0: on. Some
|delta_jq| >= tol + (1 - tau) w gives E >= (1 - tau) w: off. So the gadget halts exactly on the L_inf
rule except in the band tol < max |delta| < tol + (1 - tau) w, of width w/2 at tau = 1/2 (default
w = tol * 2^-20). Rounding: the measure layer's inputs are fl(reg - prev - tol), off from the exact
difference by at most 3u (|reg| + |prev| + tol); E = 0 stays exactly 0 through the head (a sum of
exact zeros), so the lower edge is sharp; the sums over s rows and n tokens and the latch's
arithmetic scale a nonzero E by at most (2s + 2n + 8)u relatively. ``verify.halting`` adds both to the
emulation's own per-loop bound on the iterate when it predicts where the model and numpy may disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from algoformer.halting import Halting

from .gadgets import gated_copy, identity
from .layout import Layout
from .prompt import Construction
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

REGISTERS = ("prev", "excess", "total", "halt")
DEFAULT_RAMP = 2.0 ** -20     # w = tol * DEFAULT_RAMP: the gadget's band above tol, relative


@dataclass(frozen=True)
class HaltingConstruction:
    """A construction whose loop sets a halting flag, and the rule the model is given."""
    construction: Construction   # the widened construction (the layers above added)
    rule: Halting                # rows (the ``halt`` row), threshold; every token
    tol: float                   # the L_inf tolerance on the iterate's update
    ramp: float                  # w: the flag's ramp width (the band is (tol, tol + (1 - tau) w))


def widened_layout(layout: Layout, reg: str) -> Layout:
    """The layout with the gadget's registers appended (every old register keeps its rows)."""
    for name in REGISTERS:
        if name in layout:
            raise ValueError(f"register {name!r} is already in the layout: the halting gadget needs it")
    out = Layout()
    for name, block in layout:
        out.add(name, block.stop - block.start)
    out.add("prev", layout.size(reg))
    out.add("excess", 1)
    out.add("total", 1)
    out.add("halt", 1)
    return out


def _pad_cols(a: np.ndarray, D: int) -> np.ndarray:
    return np.hstack([a, np.zeros((a.shape[0], D - a.shape[1]))])


def _pad_square(a: np.ndarray, D: int) -> np.ndarray:
    out = np.zeros((D, D))
    out[:a.shape[0], :a.shape[1]] = a
    return out


def widen_layer(layer: LayerWeights, D: int) -> LayerWeights:
    """The same layer on a wider stream: zero weights on the new rows, so it neither reads nor writes
    them (every added term is 0 * finite = 0, exactly)."""
    heads = tuple(HeadWeights(_pad_cols(h.query, D), _pad_cols(h.key, D), _pad_square(h.value, D), h.name)
                  for h in layer.heads)
    f = layer.ffn
    ffn = None if f is None else FFNWeights(_pad_cols(f.w1, D), f.b1, np.vstack([f.w2, np.zeros((D - f.w2.shape[0], f.w2.shape[1]))]),
                                            np.concatenate([f.b2, np.zeros(D - f.b2.shape[0])]))
    return LayerWeights(heads, ffn, layer.mask, layer.name)


def snapshot_layer(layout: Layout, reg: str) -> LayerWeights:
    """prev += reg: exact, since prev is 0 when it runs (the end of TF_pre)."""
    return LayerWeights(ffn=identity(layout, reg, 1.0, dst="prev"), name="halt-snapshot")


def measure_layer(layout: Layout, reg: str, tol: float, off: tuple[str, ...], gate: float) -> LayerWeights:
    """excess += sum_q relu(|reg_q - prev_q| - tol) on tokens with every ``off`` indicator 0 (two
    units per row, one per sign), 0 elsewhere while |reg - prev| <= gate; then prev <- 0 exactly."""
    s, D = layout.size(reg), layout.dim
    w1 = np.zeros((2 * s, D)); w2 = np.zeros((D, 2 * s))
    for sign, rows in ((1.0, slice(0, s)), (-1.0, slice(s, 2 * s))):
        w1[rows, layout[reg]] = sign * np.eye(s)
        w1[rows, layout["prev"]] = -sign * np.eye(s)
    for name in off:
        w1[:, layout.row(name)] = -gate
    w2[layout.row("excess"), :] = 1.0
    units = FFNWeights(w1, np.full(2 * s, -tol), w2, np.zeros(D))
    return LayerWeights(ffn=FFNWeights.concat(units, identity(layout, "prev", -1.0)), name="halt-measure")


def latch_layer(layout: Layout, reg: str, ramp: float, n_tokens: int) -> LayerWeights:
    """total <- n mean_j excess_j (one head, scores 0); halt += relu(1 - total / w - halt)
    (= max(halt, relu(1 - total / w)) - halt); excess, total <- 0 exactly; prev += reg exactly (prev
    is 0 here): the snapshot for the next loop."""
    D = layout.dim
    value = np.zeros((D, D))
    value[layout.row("total"), layout.row("excess")] = float(n_tokens)
    head = HeadWeights(np.zeros((1, D)), np.zeros((1, D)), value, "halt-sum")
    w1 = np.zeros((1, D)); w2 = np.zeros((D, 1))
    w1[0, layout.row("total")] = -1.0 / ramp
    w1[0, layout.row("halt")] = -1.0
    w2[layout.row("halt"), 0] = 1.0
    flag = FFNWeights(w1, np.ones(1), w2, np.zeros(D))
    ffn = FFNWeights.concat(flag, identity(layout, "excess", -1.0), identity(layout, "total", -1.0),
                            identity(layout, reg, 1.0, dst="prev"))
    return LayerWeights(heads=(head,), ffn=ffn, name="halt-latch")


def with_halting(con: Construction, tol: float, off: tuple[str, ...], n_tokens: int,
                 ramp: float | None = None, register_bound: float | None = None) -> HaltingConstruction:
    """``con`` with the convergence gadget on its iterate register (``con.iterate.register``).

    ``off``: indicator rows of the tokens that hold no iterate (never tested). ``n_tokens``: the
    prompt's length n (the head's mean is scaled back to a sum). ``ramp``: w (default
    tol * 2^-20). ``register_bound``: the declared |reg| bound that sets the gate (default the
    construction's own ``assumptions["register_bound"]``)."""
    if not (isinstance(tol, (int, float)) and 0 < tol < float("inf")):
        raise ValueError(f"tol={tol!r} is invalid: expected a finite float > 0")
    if not (isinstance(n_tokens, int) and n_tokens >= 1):
        raise ValueError(f"n_tokens={n_tokens!r} is invalid: expected an integer >= 1")
    ramp = tol * DEFAULT_RAMP if ramp is None else ramp
    if not (isinstance(ramp, (int, float)) and 0 < ramp < float("inf")):
        raise ValueError(f"ramp={ramp!r} is invalid: expected a finite float > 0")
    bound = con.assumptions.get("register_bound") if register_bound is None else register_bound
    if not (isinstance(bound, (int, float)) and bound > 0):
        raise ValueError(f"register_bound={bound!r} is invalid: expected a float > 0 (or a construction "
                         "that declares assumptions['register_bound'])")
    reg = con.iterate.register
    lay = widened_layout(con.layout, reg)
    for name in off:
        lay.row(name)                                    # a one-row indicator, or an error naming it
    w = con.weights
    widen = lambda layers: tuple(widen_layer(l, lay.dim) for l in layers)
    weights = AlgoFormerWeights(
        lay,
        pre=widen(w.pre) + (snapshot_layer(lay, reg),),
        loop=widen(w.loop) + (measure_layer(lay, reg, tol, tuple(off), 2.0 * bound), latch_layer(lay, reg, ramp, n_tokens)),
        post=widen(w.post),
        notes={**w.notes, "halting": {"register": reg, "tol": tol, "ramp": ramp, "off": list(off)}},
    )
    widened = replace(con, weights=weights, assumptions={**con.assumptions, "tol": tol})
    return HaltingConstruction(widened, Halting(rows=(lay.row("halt"),), threshold=0.5), tol, ramp)


GD_OFF = ("is_y", "is_sink")                 # GD's iterate: the x-tokens and the test token
NEWTON_OFF = ("is_y", "is_test", "is_sink")  # Newton's iterate: the x-tokens


def gd_halting(con: Construction, tol: float, ramp: float | None = None) -> HaltingConstruction:
    """Lemma A.2's GD AlgoFormer (``gd.gd_construction``) that halts once max |A_{k+1} x_j - A_k x_j|
    over the x-tokens and the test token is <= tol."""
    return with_halting(con, tol, GD_OFF, 2 * con.assumptions["N"] + 2, ramp)


def newton_halting(con: Construction, tol: float, ramp: float | None = None) -> HaltingConstruction:
    """Theorem 4.1's Newton AlgoFormer (``newton.newton_construction``) that halts once
    max |M_{k+1} x_i - M_k x_i| over the x-tokens is <= tol."""
    return with_halting(con, tol, NEWTON_OFF, 2 * con.assumptions["N"] + 2, ramp)
