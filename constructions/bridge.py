"""The one bridge from constructed weights to the PyTorch model.

``model_config`` gives the ``AlgoFormerConfig`` whose layers compute Eq. 1 exactly (no norm, no
score scaling, ReLU); ``state_dict`` the tensors; ``build_model`` both, loaded with
``AlgoFormer.load_exact`` (which names any mismatched tensor and both shapes).

Heads of one layer may have different k: shorter ones are padded with zero rows, which leaves
every score unchanged. Each head's D x D value map becomes W_V^h, and W_O = [I I ... I].
"""
from __future__ import annotations

import numpy as np
import torch

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig

from .weights import AlgoFormerWeights, LayerWeights


def layer_config(layer: LayerWeights, d_model: int, attention: str = "exact") -> LayerConfig:
    k = max((h.query.shape[0] for h in layer.heads), default=1)
    d_ff = layer.ffn.w1.shape[0] if layer.ffn is not None else 0
    return LayerConfig(d_model=d_model, n_heads=len(layer.heads), d_head=k, d_ff=d_ff,
                       mask=layer.mask, attention=attention)


def model_config(w: AlgoFormerWeights, attention: str = "exact") -> AlgoFormerConfig:
    D = w.d_model
    return AlgoFormerConfig(pre=tuple(layer_config(l, D, attention) for l in w.pre),
                            loop=tuple(layer_config(l, D, attention) for l in w.loop),
                            post=tuple(layer_config(l, D, attention) for l in w.post))


def _layer_tensors(prefix: str, layer: LayerWeights, D: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if layer.heads:
        k = max(h.query.shape[0] for h in layer.heads)
        pad = lambda m: np.vstack([m, np.zeros((k - m.shape[0], D))])   # zero rows: same scores
        out[prefix + "attn.w_q"] = np.stack([pad(h.query) for h in layer.heads])     # (H, k, D)
        out[prefix + "attn.w_k"] = np.stack([pad(h.key) for h in layer.heads])       # (H, k, D)
        out[prefix + "attn.w_v"] = np.stack([h.value for h in layer.heads])          # (H, D, D)
        out[prefix + "attn.w_o"] = np.hstack([np.eye(D)] * len(layer.heads))         # (D, H*D)
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
                attention: str = "exact") -> AlgoFormer:
    """An AlgoFormer in eval mode holding the constructed weights, cast to ``dtype`` on ``device``."""
    model = AlgoFormer(model_config(w, attention)).to(dtype=dtype, device=device)
    model.load_exact(state_dict(w))
    return model.eval().requires_grad_(False)
