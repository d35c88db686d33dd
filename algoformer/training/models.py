"""The three models of the paper's experiments, each with one read-in and one read-out.

    algoformer  TF_pre, TF_loop, TF_post: ``layers`` layers each (paper: 1), T loops
    standard    GPT-2 style: ``layers`` pre layers (paper: 12), no loop, no post
    looped      Yang et al. 2024: one looped block of ``layers`` layers with input injection

All are ``AlgoFormer`` instances with trainable layers (causal mask, pre-LayerNorm, scaled scores,
GELU, fused attention), a learned positional embedding and a final LayerNorm, initialised GPT-2 style.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import AlgoFormerConfig, AttentionImpl, LayerConfig
from ..layer import init_gpt2_
from ..model import AlgoFormer

ModelName = Literal["algoformer", "standard", "looped"]
MODELS: tuple[str, ...] = ("algoformer", "standard", "looped")
DEFAULT_LAYERS = {"algoformer": 1, "standard": 12, "looped": 1}


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    width: int = 256                 # D (paper: 256)
    heads: int = 8                   # paper: 8
    layers: int | None = None        # None = the paper's default for the model (DEFAULT_LAYERS)
    dropout: float = 0.0
    attention: AttentionImpl | Literal["linear"] = "sdpa"   # linear: scores="linear" on the fused path
    init_scale: Literal["gpt2", "fan_in"] = "gpt2"   # std 0.02 (GPT-2, the paper's backbone) or 1/sqrt(fan-in)

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"model={self.name!r} is invalid: expected one of {', '.join(MODELS)}")
        if not (isinstance(self.width, int) and self.width >= 1):
            raise ValueError(f"width={self.width!r} is invalid: expected an integer >= 1")
        if not (isinstance(self.heads, int) and self.heads >= 1 and self.width % self.heads == 0):
            raise ValueError(f"heads={self.heads!r} is invalid: expected an integer >= 1 dividing width={self.width}")
        if self.init_scale not in ("gpt2", "fan_in"):
            raise ValueError(f"init_scale={self.init_scale!r} is invalid: expected one of gpt2, fan_in")
        if self.layers is not None and not (isinstance(self.layers, int) and self.layers >= 1):
            raise ValueError(f"layers={self.layers!r} is invalid: expected None or an integer >= 1")

    @property
    def n_layers(self) -> int:
        return DEFAULT_LAYERS[self.name] if self.layers is None else self.layers

    @property
    def loops(self) -> bool:
        """Whether the model has a loop (the standard transformer runs with T = 0)."""
        return self.name != "standard"

    def layer_config(self) -> LayerConfig:
        dh = self.width // self.heads
        return LayerConfig(d_model=self.width, n_heads=self.heads, d_head=dh, d_ff=4 * self.width,
                           d_value=dh, mask="causal", activation="gelu", scale_scores=True,
                           pre_norm=True, dropout=self.dropout,
                           attention="sdpa" if self.attention == "linear" else self.attention,
                           scores="linear" if self.attention == "linear" else "softmax")

    def config(self, d_in: int, d_out: int, n_positions: int) -> AlgoFormerConfig:
        stack = (self.layer_config(),) * self.n_layers
        pre, loop, post = {"algoformer": (stack, stack, stack), "standard": (stack, (), ()),
                           "looped": ((), stack, ())}[self.name]
        return AlgoFormerConfig(pre=pre, loop=loop, post=post, d_in=d_in, d_out=d_out,
                                input_injection=self.name == "looped", final_norm=True,
                                n_positions=n_positions)


def build_model(spec: ModelSpec, d_in: int, d_out: int, n_positions: int) -> AlgoFormer:
    """A freshly initialised model (draws from torch's global generator: seed it first)."""
    model = AlgoFormer(spec.config(d_in, d_out, n_positions))
    init_gpt2_(model, n_layers=max(len(model.pre) + len(model.loop) + len(model.post), 1),
               fan_in=spec.init_scale == "fan_in")
    return model
