"""When a looped model stops: a halting rule on flag rows of the residual stream.

A construction that can tell when its algorithm is done writes a *flag* into rows of the tokens
(for instance ``constructions.halting``'s convergence gadget: 1 once the iterate's update is below a
tolerance). The model is told only which rows to read and a threshold; it knows nothing of what the
flag means. ``AlgoFormer.forward_halting`` loops each example until its flag is on, or ``max_loops``.

    Halting(rows=(r,), threshold=0.5)              halted: h[b, j, r] > 0.5 for every token j
    Halting(rows=(r, s), tokens=(0, 2, 4))         ... for both rows, on tokens 0, 2, 4 only

The rule is read after TF_pre (an example whose pre-transformer sets the flag halts after 0 loops)
and after every loop. A NaN flag is never on: an example whose state went non-finite runs to
``max_loops`` (the caller's checks see the NaN).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Halting:
    rows: tuple[int, ...]                # residual rows holding the flag (all must be on)
    threshold: float = 0.5               # a flag is on where its value is > threshold
    tokens: tuple[int, ...] | None = None   # tokens whose flags count; None = every token

    def __post_init__(self) -> None:
        if not (isinstance(self.rows, tuple) and self.rows
                and all(isinstance(r, int) and r >= 0 for r in self.rows)):
            raise ValueError(f"rows={self.rows!r} is invalid: expected a non-empty tuple of integers >= 0")
        if not (isinstance(self.threshold, (int, float)) and abs(self.threshold) < float("inf")):
            raise ValueError(f"threshold={self.threshold!r} is invalid: expected a finite float")
        if self.tokens is not None and not (isinstance(self.tokens, tuple) and self.tokens
                                            and all(isinstance(j, int) and j >= 0 for j in self.tokens)):
            raise ValueError(f"tokens={self.tokens!r} is invalid: expected None or a non-empty tuple "
                             "of integers >= 0")

    def check(self, h: torch.Tensor) -> None:
        """Refuse a state (B, n, D) that the rule's rows or tokens do not fit."""
        B, n, D = h.shape
        if max(self.rows) >= D:
            raise ValueError(f"rows={self.rows!r} is invalid for width D={D}: expected rows < {D}")
        if self.tokens is not None and max(self.tokens) >= n:
            raise ValueError(f"tokens={self.tokens!r} is invalid for n={n} tokens: expected tokens < {n}")

    def on(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, n, D) -> (B,) bool: every watched flag of the example is on."""
        flags = h[:, :, list(self.rows)]                                   # (B, n, r)
        if self.tokens is not None:
            flags = flags[:, list(self.tokens)]
        return (flags > self.threshold).flatten(1).all(dim=1)


@dataclass(frozen=True)
class Halted:
    """What ``forward_halting`` returns."""
    output: torch.Tensor   # (B, n, d_out or D): TF_post of each example's state when it halted
    loops: torch.Tensor    # (B,) int64: the loops each example ran (max_loops where it never halted)
