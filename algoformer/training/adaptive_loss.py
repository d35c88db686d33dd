"""Training objectives of the adaptive-depth options (``--adaptive``; the rules are ``algoformer.adaptive``).

Each is an ``nn.Module`` wrapping the model, with ``Eq3Loss``'s call signature, so that DDP and
torch.compile wrap it the same way and ``train`` needs no other change:

    ouro        mean_b [sum_{t=1..T} p_t L_t - beta H(p)]: L_t is the example's loss after t loops (the
                mean squared error over its scored positions), p the exit distribution of the gate.
    loopformer  L(full) + L(short) + c MSE(short, detach(full)): the full trajectory runs the training
                budget T (dt = 1/T), the short one a budget L drawn uniformly from 1..T-1 with torch's
                global generator (saved in the checkpoint, so ``--resume`` stays bit-exact); L(.) is the
                task loss of a trajectory's final output, c the consistency weight (LoopFormer: 0.1).

Both backpropagate through every loop (``delta_T`` and ``truncate`` are Eq. 3's and do not apply).
"""
from __future__ import annotations

import torch
from torch import nn

from ..adaptive import answer_position, consistency_loss, exit_distribution, ouro_objective
from ..model import AlgoFormer
from .loss import Eq3Loss, masked_mean, position_errors


def example_loss(pred: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """pred (B, n, o) -> (B,): the mean squared error over each example's scored positions."""
    return (position_errors(pred, targets) * weight).sum(-1) / weight.sum()


class OuroLoss(nn.Module):
    def __init__(self, model: AlgoFormer, beta: float) -> None:
        super().__init__()
        self.model, self.beta = model, beta

    def forward(self, tokens, targets, weight, T: int, delta_T: int = 0, truncate: bool = True) -> torch.Tensor:
        m, answer = self.model, answer_position(weight)
        h = m.run_pre(m.embed(tokens))
        e = h if m.cfg.input_injection else None
        losses, lams = [], []
        for t in range(1, T + 1):
            h = m.run_loop(h, t, e)
            losses.append(example_loss(m.run_post(h), targets, weight))
            lams.append(m.exit_gate(h, answer))
        p = exit_distribution(torch.stack(lams))                          # (T, B)
        return ouro_objective(torch.stack(losses), p, self.beta)


class LoopFormerLoss(nn.Module):
    def __init__(self, model: AlgoFormer, consistency: float) -> None:
        super().__init__()
        self.model, self.consistency = model, consistency

    def forward(self, tokens, targets, weight, T: int, delta_T: int = 0, truncate: bool = True) -> torch.Tensor:
        cond = self.model.loop_condition
        with cond.budget(T):
            full = self.model(tokens, T)
        L = int(torch.randint(1, T, ())) if T > 1 else 1
        with cond.budget(L):
            short = self.model(tokens, L)
        task = masked_mean(position_errors(full, targets), weight) + masked_mean(position_errors(short, targets), weight)
        return task + self.consistency * consistency_loss(short, full, weight)


def make_loss(model: AlgoFormer, adaptive: str, exit_beta: float, consistency: float) -> nn.Module:
    if adaptive == "ouro":
        return OuroLoss(model, exit_beta)
    if adaptive == "loopformer":
        return LoopFormerLoss(model, consistency)
    return Eq3Loss(model)
