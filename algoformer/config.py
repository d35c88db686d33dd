"""Configuration of one AlgoFormer layer and of the whole model.

Every field carries its reason inline. The defaults are the paper's exact layer (Eq. 1): no norm,
no 1/sqrt(k) score scaling, ReLU, no dropout. Trainable configurations switch these on.
Invalid values raise ``ValueError`` naming the field, the value and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mask = Literal["full", "causal"]          # encoder (full) or decoder (causal) attention
Activation = Literal["relu", "gelu"]
AttentionImpl = Literal["exact", "sdpa"]  # our explicit softmax, or torch's fused kernel
Scores = Literal["softmax", "linear"]     # what a head does with its scores (see ``LayerConfig.scores``)


def _check(cond: bool, field: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field}={value!r} is invalid: expected {allowed}")


def _check_choice(field: str, value, choices: tuple) -> None:
    _check(value in choices, field, value, "one of " + ", ".join(repr(c) for c in choices))


@dataclass(frozen=True)
class LayerConfig:
    d_model: int                 # D: width of every token (residual stream)
    n_heads: int                 # H: heads summed in Eq. 1 (0 = identity attention)
    d_head: int                  # k: rows of W_Q and W_K per head
    d_ff: int                    # hidden units of the feed-forward network (0 = no FFN)
    d_value: int | None = None   # rows of each head's value projection; None = D, so that W_O W_V
                                 # can express any D -> D value map, as the constructions need
    mask: Mask = "full"
    activation: Activation = "relu"
    scale_scores: bool = False   # multiply scores by 1/sqrt(k); Eq. 1 has no such factor
    pre_norm: bool = False       # LayerNorm before attention and before the FFN (GPT-2 style)
    dropout: float = 0.0         # on attention weights and sublayer outputs, training only
    attention: AttentionImpl = "exact"
    bias: bool = True            # FFN biases b_1, b_2 (Eq. 1 has them)
    attention_dtype: str | None = None   # run attention (Q, K, V, softmax, the sum over keys, W_O) in
                                 # this dtype when it is wider than the residual stream's, and round the
                                 # output back before the residual add: "float32" under bfloat16 (the
                                 # usual mixed-precision upcast), "float64" under float32 (a diagnostic:
                                 # the stream's rounding without the attention's). None: the stream's dtype
    scores: Scores = "softmax"   # "linear": the scores weight the values directly, sum_i (q_j . k_i) v_i,
                                 # no softmax and no normaliser (no 1/n: von Oswald et al. 2023's form;
                                 # Chen et al. 2024's 1/n is a constant that constructions fold into W_V).
                                 # "exact" forms the (n, n) scores, "sdpa" the fused (K^T V)-first order

    def __post_init__(self) -> None:
        _check(self.d_model >= 1, "d_model", self.d_model, "an integer >= 1")
        _check(self.n_heads >= 0, "n_heads", self.n_heads, "an integer >= 0")
        _check(self.d_head >= 1, "d_head", self.d_head, "an integer >= 1")
        _check(self.d_ff >= 0, "d_ff", self.d_ff, "an integer >= 0")
        _check(self.d_value is None or self.d_value >= 1, "d_value", self.d_value,
               "None or an integer >= 1")
        _check_choice("mask", self.mask, ("full", "causal"))
        _check_choice("activation", self.activation, ("relu", "gelu"))
        _check_choice("attention", self.attention, ("exact", "sdpa"))
        _check_choice("attention_dtype", self.attention_dtype, (None, "float32", "float64"))
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")
        _check_choice("scores", self.scores, ("softmax", "linear"))
        _check(not (self.scores == "linear" and self.attention == "sdpa" and self.dropout), "dropout",
               self.dropout, "0 with scores='linear' and attention='sdpa' (the fused order never forms "
               "the weights that attention dropout drops; use attention='exact')")

    @property
    def value_dim(self) -> int:
        return self.d_model if self.d_value is None else self.d_value

    @property
    def is_exact_eq1(self) -> bool:
        """True when the layer computes Eq. 1 and nothing else (what constructed weights need)."""
        return not (self.scale_scores or self.pre_norm or self.dropout or self.activation != "relu")


@dataclass(frozen=True)
class AlgoFormerConfig:
    pre: tuple[LayerConfig, ...]      # TF_pre: runs once
    loop: tuple[LayerConfig, ...]     # TF_loop: one set of weights, applied T times
    post: tuple[LayerConfig, ...]     # TF_post: runs once
    d_in: int | None = None           # read-in Linear(d_in, D) before TF_pre; None = tokens are D wide
    d_out: int | None = None          # read-out Linear(D, d_out) after TF_post; None = no read-out
    input_injection: bool = False     # loop computes f(h + e), e = TF_pre output (Yang et al. 2024)
    final_norm: bool = False          # LayerNorm after TF_post (trainable configurations)
    n_positions: int | None = None    # learned positional embedding added after the read-in (GPT-2's
                                      # wpe, as in the paper's experiments); None = none (Eq. 2 exactly)

    def __post_init__(self) -> None:
        for name in ("pre", "loop", "post"):
            stack = getattr(self, name)
            _check(isinstance(stack, tuple) and all(isinstance(c, LayerConfig) for c in stack),
                   name, stack, "a tuple of LayerConfig")
        widths = {c.d_model for c in self.pre + self.loop + self.post}
        _check(len(widths) <= 1, "d_model", sorted(widths), "the same d_model in every layer")
        _check(self.d_in is None or self.d_in >= 1, "d_in", self.d_in, "None or an integer >= 1")
        _check(self.d_out is None or self.d_out >= 1, "d_out", self.d_out, "None or an integer >= 1")
        _check(self.n_positions is None or self.n_positions >= 1, "n_positions", self.n_positions,
               "None or an integer >= 1")

    @property
    def d_model(self) -> int:
        layers = self.pre + self.loop + self.post
        _check(bool(layers), "pre/loop/post", (), "at least one layer in the model")
        return layers[0].d_model
