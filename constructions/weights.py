"""Frozen weight dataclasses: what a construction returns (plain numpy, float64, no nn.Module).

Shapes (tokens as rows, h: (n, D)): a head's ``query`` and ``key`` are the paper's W_Q, W_K (k x D);
``value`` is its D x D value map W_V (the bridge loads it as W_O^h W_V^h). A feed-forward network is
``w2 @ relu(w1 @ h + b1) + b2`` with w1 (F, D), b1 (F,), w2 (D, F), b2 (D,).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .layout import Layout


def _shape(name: str, arr: np.ndarray, want: tuple) -> None:
    if arr.shape != want:
        raise ValueError(f"{name} has shape {arr.shape}, expected {want}")


@dataclass(frozen=True)
class HeadWeights:
    query: np.ndarray   # (k, D)
    key: np.ndarray     # (k, D)
    value: np.ndarray   # (D, D)
    name: str = ""      # what the head does, for plots and error messages

    def __post_init__(self) -> None:
        k, D = self.query.shape
        _shape(f"head {self.name!r} key", self.key, (k, D))
        _shape(f"head {self.name!r} value", self.value, (D, D))

    @property
    def d_model(self) -> int:
        return self.query.shape[1]


@dataclass(frozen=True)
class FFNWeights:
    w1: np.ndarray   # (F, D)
    b1: np.ndarray   # (F,)
    w2: np.ndarray   # (D, F)
    b2: np.ndarray   # (D,)

    def __post_init__(self) -> None:
        F, D = self.w1.shape
        _shape("ffn b1", self.b1, (F,))
        _shape("ffn w2", self.w2, (D, F))
        _shape("ffn b2", self.b2, (D,))

    @staticmethod
    def concat(*parts: "FFNWeights") -> "FFNWeights":
        """Several gadgets side by side in one FFN: hidden units stacked, outputs summed."""
        return FFNWeights(np.concatenate([p.w1 for p in parts]), np.concatenate([p.b1 for p in parts]),
                          np.concatenate([p.w2 for p in parts], axis=1), sum(p.b2 for p in parts))


@dataclass(frozen=True)
class LayerWeights:
    heads: tuple[HeadWeights, ...] = ()
    ffn: FFNWeights | None = None
    mask: Literal["full", "causal"] = "full"
    name: str = ""
    scores: Literal["softmax", "linear"] = "softmax"   # linear: sum_i (q_j . k_i) v_i, no softmax, no normaliser

    def __post_init__(self) -> None:
        if self.scores not in ("softmax", "linear"):
            raise ValueError(f"layer {self.name!r} scores={self.scores!r} is invalid: expected 'softmax' or 'linear'")
        dims = {h.d_model for h in self.heads} | ({self.ffn.w1.shape[1]} if self.ffn else set())
        if len(dims) > 1:
            raise ValueError(f"layer {self.name!r} mixes widths {sorted(dims)}")


@dataclass(frozen=True)
class AlgoFormerWeights:
    """TF_pre, TF_loop (applied T times), TF_post, over one residual layout."""
    layout: Layout
    pre: tuple[LayerWeights, ...]
    loop: tuple[LayerWeights, ...]
    post: tuple[LayerWeights, ...]
    notes: dict = field(default_factory=dict)   # parameters the weights were built with

    def __post_init__(self) -> None:
        for stack in ("pre", "loop", "post"):
            for layer in getattr(self, stack):
                for h in layer.heads:
                    if h.d_model != self.layout.dim:
                        raise ValueError(f"{stack} layer {layer.name!r} head {h.name!r} has width "
                                         f"{h.d_model}, the layout has {self.layout.dim} rows")

    @property
    def d_model(self) -> int:
        return self.layout.dim
