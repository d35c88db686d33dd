"""A plain numpy interpreter of constructed weights through Eq. 1 (float64 unless told otherwise).

It shares no code with the PyTorch model: the two are run on the same weights and compared
(differential testing). Shapes: h (B, n, D) tokens as rows.
"""
from __future__ import annotations

import numpy as np

from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights


def softmax(scores: np.ndarray) -> np.ndarray:
    """Stable softmax over the last axis (keys); -inf entries get weight 0."""
    z = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def apply_head(head: HeadWeights, h: np.ndarray, causal: bool, linear: bool = False) -> np.ndarray:
    """softmax(scores) @ values; ``linear``: scores @ values (no softmax, no normaliser, masked 0)."""
    q = h @ head.query.T                                  # (B, n, k)
    k = h @ head.key.T                                    # (B, n, k)
    scores = q @ k.transpose(0, 2, 1)                     # (B, n_query, n_key)
    if linear:
        return (np.tril(scores) if causal else scores) @ (h @ head.value.T)
    if causal:
        n = h.shape[1]
        scores = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, scores)
    return softmax(scores) @ (h @ head.value.T)            # (B, n, D)


def apply_ffn(ffn: FFNWeights, h: np.ndarray) -> np.ndarray:
    return np.maximum(h @ ffn.w1.T + ffn.b1, 0.0) @ ffn.w2.T + ffn.b2


def apply_layer(layer: LayerWeights, h: np.ndarray) -> np.ndarray:
    """TF(X) of Eq. 1: residual attention (sum of heads), then residual ReLU FFN."""
    causal, linear = layer.mask == "causal", layer.scores == "linear"
    h = h + sum((apply_head(hd, h, causal, linear) for hd in layer.heads), np.zeros_like(h))
    if layer.ffn is not None:
        h = h + apply_ffn(layer.ffn, h)
    return h


def apply_stack(layers, h: np.ndarray) -> np.ndarray:
    for layer in layers:
        h = apply_layer(layer, h)
    return h


def run(weights: AlgoFormerWeights, tokens: np.ndarray, n_loops: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns (output of TF_post, [state after TF_pre, after loop 1, ..., after loop T])."""
    h = apply_stack(weights.pre, np.asarray(tokens, dtype=np.float64))
    states = [h]
    for _ in range(n_loops):
        h = apply_stack(weights.loop, h)
        states.append(h)
    return apply_stack(weights.post, h), states
