"""The one bridge from constructed weights to the PyTorch model.

``model_config`` gives the ``AlgoFormerConfig`` whose layers compute Eq. 1 exactly (no norm, no
score scaling, ReLU); ``state_dict`` the tensors; ``build_model`` both, loaded with
``AlgoFormer.load_exact`` (which names any mismatched tensor and both shapes).

Heads of one layer may have different k: shorter ones are padded with zero rows, which leaves
every score unchanged. Each head's D x D value map V is factored exactly as W_O^h W_V^h: W_V^h
selects the r rows of the token that V reads (its nonzero columns) and W_O^h = V[:, those]; r is
the largest such count in the layer (zero-padded). Selection is exact in floating point, so the
model computes the same products as V @ h, at a fraction of the cost of a dense D x D map.
"""
from __future__ import annotations

import numpy as np
import torch

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig

from .weights import AlgoFormerWeights, LayerWeights


def _value_columns(layer: LayerWeights) -> list[np.ndarray]:
    return [np.flatnonzero(np.any(h.value != 0, axis=0)) for h in layer.heads]


def _value_rank(layer: LayerWeights) -> int:
    return max([len(c) for c in _value_columns(layer)] + [1])


def layer_config(layer: LayerWeights, d_model: int, attention: str = "exact",
                 attention_dtype: str | None = None) -> LayerConfig:
    k = max((h.query.shape[0] for h in layer.heads), default=1)
    d_ff = layer.ffn.w1.shape[0] if layer.ffn is not None else 0
    return LayerConfig(d_model=d_model, n_heads=len(layer.heads), d_head=k, d_ff=d_ff,
                       d_value=_value_rank(layer), mask=layer.mask, attention=attention,
                       attention_dtype=attention_dtype, scores=layer.scores)


def model_config(w: AlgoFormerWeights, attention: str = "exact",
                 attention_dtype: str | None = None) -> AlgoFormerConfig:
    """``attention_dtype``: see ``LayerConfig`` (None: the attention runs in the model's dtype)."""
    D = w.d_model
    cfg = lambda l: layer_config(l, D, attention, attention_dtype)
    return AlgoFormerConfig(pre=tuple(cfg(l) for l in w.pre), loop=tuple(cfg(l) for l in w.loop),
                            post=tuple(cfg(l) for l in w.post))


def _layer_tensors(prefix: str, layer: LayerWeights, D: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if layer.heads:
        k = max(h.query.shape[0] for h in layer.heads)
        pad = lambda m: np.vstack([m, np.zeros((k - m.shape[0], D))])   # zero rows: same scores
        out[prefix + "attn.w_q"] = np.stack([pad(h.query) for h in layer.heads])     # (H, k, D)
        out[prefix + "attn.w_k"] = np.stack([pad(h.key) for h in layer.heads])       # (H, k, D)
        r = _value_rank(layer)
        w_v, w_o = np.zeros((len(layer.heads), r, D)), np.zeros((D, len(layer.heads) * r))
        for i, (h, cols) in enumerate(zip(layer.heads, _value_columns(layer))):
            w_v[i, np.arange(len(cols)), cols] = 1.0                                  # select rows read
            w_o[:, i * r:i * r + len(cols)] = h.value[:, cols]                        # V restricted
        out[prefix + "attn.w_v"] = w_v                                                # (H, r, D)
        out[prefix + "attn.w_o"] = w_o                                                # (D, H*r)
    if layer.ffn is not None:
        f = layer.ffn
        out.update({prefix + "ffn.fc1.weight": f.w1, prefix + "ffn.fc1.bias": f.b1,
                    prefix + "ffn.fc2.weight": f.w2, prefix + "ffn.fc2.bias": f.b2})
    return out


def state_dict(w: AlgoFormerWeights) -> dict[str, torch.Tensor]:
    arrays: dict[str, np.ndarray] = {}
    for stack in ("pre", "loop", "post"):
        for i, layer in enumerate(getattr(w, stack)):
            arrays.update(_layer_tensors(f"{stack}.{i}.", layer, w.d_model))
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in arrays.items()}


def build_model(w: AlgoFormerWeights, dtype: torch.dtype = torch.float64, device="cpu",
                attention: str = "exact", attention_dtype: str | None = None) -> AlgoFormer:
    """An AlgoFormer in eval mode holding the constructed weights, cast to ``dtype`` on ``device``
    (``attention_dtype``: a wider dtype for the attention sublayers, see ``LayerConfig``)."""
    model = AlgoFormer(model_config(w, attention, attention_dtype)).to(dtype=dtype, device=device)
    model.load_exact(state_dict(w))
    return model.eval().requires_grad_(False)
