"""Named taps on intermediate tensors (in the style of TransformerLens' HookPoint).

A ``HookPoint`` is an identity module. While a cache dict is attached (``AlgoFormer.run_with_cache``
attaches one), every call stores its input under ``scope + name``. The loop stack is called T times
with the same modules, so the model sets the scope (``"loop.3."``) before each call: the cache then
holds the iterate of every loop under its own key.
"""
from __future__ import annotations

import torch
from torch import nn


class HookPoint(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.scope = ""
        self.cache: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            self.cache[self.scope + self.name] = x.detach()
        return x
