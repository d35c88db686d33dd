"""AlgoFormer: pre-transformer, looped transformer, post-transformer (arXiv 2402.13572, Eq. 1-3).

The model runs the paper's layer exactly, loads constructed weights (see ``constructions``) and is
trainable from scratch. It never imports ``constructions`` or ``verify``.
"""
from .config import AlgoFormerConfig, LayerConfig
from .layer import Attention, FeedForward, Layer, param_count
from .model import AlgoFormer

__all__ = ["AlgoFormer", "AlgoFormerConfig", "Attention", "FeedForward", "Layer", "LayerConfig", "param_count"]
