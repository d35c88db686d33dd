"""The training loss of Eq. 3: squared error averaged over loops t = T0..T and over scored positions.

    T0 = max(T - Delta_T, 0)
    loss = mean_{t = T0..T} mean_{b, scored i} mean_o (TF^t(P_i)_o - f(x_i)_o)^2

The squared error is averaged over the o output coordinates (o = 1 for regression), so that the
predict-zero baseline equals the per-coordinate variance of the targets. As in Yang et al. 2024 the
loops before T0 may run without autograd (``truncate``): the loss does not read them directly. That is
only sound with input injection (the looped baseline), where the injected embedding keeps a gradient
path to the read-in; without it the state after a no-grad loop is detached from TF_pre and the read-in,
which then never learn. So ``truncate`` applies to models with input injection only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model import AlgoFormer


def loop_window(T: int, delta_T: int) -> int:
    """T0 of Eq. 3."""
    return max(T - delta_T, 0)


def position_errors(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pred (..., B, n, o), targets (B, n, o) -> squared error per position (..., B, n)."""
    return (pred.float() - targets).pow(2).mean(-1)


def masked_mean(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """err (..., B, n), weight (n,) -> mean over everything, scored positions only."""
    return (err * weight).sum() / (weight.sum() * err[..., 0].numel())


class Eq3Loss(nn.Module):
    """Wraps the model so that one ``forward`` computes the loss (what DDP and torch.compile need)."""

    def __init__(self, model: AlgoFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                T: int, delta_T: int, truncate: bool = True) -> torch.Tensor:
        T0 = loop_window(T, delta_T)
        truncate = truncate and self.model.cfg.input_injection
        outs = self.model.forward_each_loop(tokens, T, first=T0,
                                            no_grad_loops=T0 if truncate else 0)  # (T-T0+1, B, n, o)
        return masked_mean(position_errors(outs, targets), weight)
