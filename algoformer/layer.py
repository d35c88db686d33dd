"""One AlgoFormer layer: the paper's Eq. 1, exactly.

Shapes: B batch, n tokens, D width (``d_model``), H heads, k = ``d_head``, v = ``d_value``,
F = ``d_ff``. Tokens are rows: the paper's column matrix X (D x n) is our ``h[b]`` (n x D).

    Attn(X) = X + sum_h W_O^h W_V^h X softmax(X^T W_K^hT W_Q^h X)      (softmax over keys)
    TF(X)   = Attn(X) + W_2 act(W_1 Attn(X) + b_1) + b_2

Parameters: ``w_q``, ``w_k`` (H, k, D) are the paper's W_Q, W_K as written; ``w_v`` (H, v, D) and
``w_o`` (D, H*v) together form each head's value map W_O^h W_V^h: with v = D and W_O = [I ... I]
that is any D x D matrix, which is what constructed weights use. ``ffn.fc1`` / ``ffn.fc2`` hold
W_1, b_1 and W_2, b_2 (``nn.Linear`` layout, weight (out, in)).

Two attention paths compute the same function: ``exact`` (explicit scores, ``torch.softmax``, the
pattern available to hooks) and ``sdpa`` (``torch.nn.functional.scaled_dot_product_attention``, which
may pick a fused kernel). Tests check that they agree.

Linear attention (``LayerConfig.scores = "linear"``, Chen et al. 2024, von Oswald et al. 2023): the
scores weight the values directly, no softmax and no normaliser,

    Attn(X) = X + sum_h W_O^h W_V^h X (X^T W_K^hT W_Q^h X)          (causal: keys i <= query j)

``exact`` forms the (n, n) scores (exposed at ``hook_pattern``, masked entries 0) and multiplies them
into V: O(n^2 (k + v)). ``sdpa`` is the fused order, K^T V first: full mask O(n k v), one (k, v)
state per head; causal mask in chunks of ``LINEAR_CHUNK`` queries (the chunk's own keys through its
masked scores, earlier keys through the running K^T V state): O(n (LINEAR_CHUNK k + k v)), no (n, n)
and no (n, k, v) tensor.

``attention_dtype`` (``LayerConfig``): the attention runs in that dtype when it is wider than the
one its matmuls would otherwise run in (the stream's, or autocast's), with autocast off inside; the
parameters are cast exactly (every narrower value is representable), and the output is rounded to
the stream's dtype once, before the residual add.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerConfig
from .hooks import HookPoint


LINEAR_CHUNK = 32   # queries per chunk of the fused causal linear attention

_UPCAST = {None: None, "float32": torch.float32, "float64": torch.float64}


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype the matmuls on h would run in: autocast's where it is on, else h's."""
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return h.dtype


class Attention(nn.Module):
    def __init__(self, cfg: LayerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H, k, v, D = cfg.n_heads, cfg.d_head, cfg.value_dim, cfg.d_model
        self.w_q = nn.Parameter(torch.empty(H, k, D))
        self.w_k = nn.Parameter(torch.empty(H, k, D))
        self.w_v = nn.Parameter(torch.empty(H, v, D))
        self.w_o = nn.Parameter(torch.empty(D, H * v))
        self.hook_pattern = HookPoint("hook_pattern")   # (B, H, n_query, n_key)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        D = self.cfg.d_model
        for w in (self.w_q, self.w_k, self.w_v):
            nn.init.normal_(w, std=D ** -0.5)
        nn.init.normal_(self.w_o, std=(self.cfg.n_heads * self.cfg.value_dim) ** -0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        up = _UPCAST[self.cfg.attention_dtype]
        if up is not None and torch.finfo(up).eps < torch.finfo(_compute_dtype(h)).eps:
            w = (p.to(up) for p in (self.w_q, self.w_k, self.w_v, self.w_o))
            with torch.autocast(h.device.type, enabled=False):   # autocast would round the matmuls again
                return self._attend(h.to(up), *w).to(h.dtype)    # rounded once, before the residual add
        return self._attend(h, self.w_q, self.w_k, self.w_v, self.w_o)

    def _attend(self, h, w_q, w_k, w_v, w_o) -> torch.Tensor:
        cfg = self.cfg
        q = torch.einsum("bnd,hkd->bhnk", h, w_q)        # (B, H, n, k)
        k = torch.einsum("bnd,hkd->bhnk", h, w_k)        # (B, H, n, k)
        v = torch.einsum("bnd,hvd->bhnv", h, w_v)        # (B, H, n, v)
        scale = cfg.d_head ** -0.5 if cfg.scale_scores else 1.0
        p_drop = cfg.dropout if self.training else 0.0
        if cfg.scores == "linear":
            z = self._linear(q * scale, k, v, p_drop)       # (B, H, n, v)
        elif cfg.attention == "sdpa":
            z = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop,
                                               is_causal=cfg.mask == "causal", scale=scale)
        else:
            z = self._exact(q, k, v, scale, p_drop)        # (B, H, n, v)
        B, H, n, dv = z.shape
        z = z.transpose(1, 2).reshape(B, n, H * dv)         # (B, n, H*v), heads concatenated
        return z @ w_o.T                                    # (B, n, D)

    def _exact(self, q, k, v, scale: float, p_drop: float) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * scale           # (B, H, n_query, n_key)
        if self.cfg.mask == "causal":
            n = scores.shape[-1]
            future = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        if p_drop:
            pattern = F.dropout(pattern, p_drop)
        return pattern @ v

    def _linear(self, q, k, v, p_drop: float) -> torch.Tensor:
        """z_j = sum_i (q_j . k_i) v_i over the keys query j sees (no softmax, no normaliser)."""
        causal = self.cfg.mask == "causal"
        if self.cfg.attention == "exact":
            scores = q @ k.transpose(-1, -2)                       # (B, H, n_query, n_key)
            if causal:
                scores = scores.masked_fill(_future(scores.shape[-1], scores.device), 0.0)
            pattern = self.hook_pattern(scores)
            if p_drop:
                pattern = F.dropout(pattern, p_drop)
            return pattern @ v
        if not causal:
            return q @ (k.transpose(-1, -2) @ v)                   # (B, H, n, k) @ (B, H, k, v)
        state = q.new_zeros(*q.shape[:2], k.shape[-1], v.shape[-1])   # sum of k_i v_i^T over earlier chunks
        out = []
        for s in range(0, q.shape[2], LINEAR_CHUNK):
            qc, kc, vc = (t[:, :, s:s + LINEAR_CHUNK] for t in (q, k, v))
            own = (qc @ kc.transpose(-1, -2)).masked_fill(_future(qc.shape[2], q.device), 0.0)
            out.append(qc @ state + own @ vc)
            state = state + kc.transpose(-1, -2) @ vc
        return torch.cat(out, dim=2)


def _future(n: int, device) -> torch.Tensor:
    """(n, n) True where the key comes after the query (what the causal mask hides)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


class FeedForward(nn.Module):
    def __init__(self, cfg: LayerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(h)))


class Layer(nn.Module):
    """TF(X) of Eq. 1; optional pre-LayerNorm and dropout for trainable configurations."""

    def __init__(self, cfg: LayerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn = Attention(cfg) if cfg.n_heads > 0 else None
        self.ffn = FeedForward(cfg) if cfg.d_ff > 0 else None
        self.norm1 = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.hook_attn_out = HookPoint("hook_attn_out")    # (B, n, D) Attn(X) of Eq. 1
        self.hook_resid_post = HookPoint("hook_resid_post")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            h = h + self.drop(self.attn(self.norm1(h)))
        h = self.hook_attn_out(h)
        if self.ffn is not None:
            h = h + self.drop(self.ffn(self.norm2(h)))
        return self.hook_resid_post(h)

    def set_scope(self, scope: str) -> None:
        for m in self.modules():
            if isinstance(m, HookPoint):
                m.scope = scope


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def init_gpt2_(module: nn.Module, n_layers: int, fan_in: bool = False) -> None:
    """GPT-2 style initialisation for trainable configurations: weights normal with std 0.02, the
    output maps (W_O, W_2) scaled by 1/sqrt(2 n_layers), biases 0.

    ``fan_in``: std 1/sqrt(last dimension) instead of 0.02 (the last dimension is the fan-in of every
    map here, and the width D for the positional table). GPT-2's 0.02 is ~0.55/sqrt(768), calibrated for
    width 768; at width 16 it is 0.08/sqrt(16), so every attention score starts ~0.02^2 D times the
    token norms: uniform attention, and the gradients of W_Q and W_K are products of two near-zero
    maps (a saddle). Tiny models then sit on a plateau that only some seeds leave within hundreds of
    steps (tests/test_training.py measures both)."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            std = p.shape[-1] ** -0.5 if fan_in else 0.02
            if name.endswith(("w_o", "fc2.weight")):
                std = std / math.sqrt(2 * max(n_layers, 1))
            nn.init.normal_(p, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
