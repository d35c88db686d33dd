"""Adaptive depth for the looped model: a learned exit (after Ouro) and budget-conditioned loops
(after LoopFormer). Both are our restatements of the published rules, written for this model.

Shapes: B batch, n tokens, D width, T loops. ``answer`` is the token whose state the gate reads: the
last scored token of the prompt (for regression prompts x_N, token 2N - 2, the final query).

Ouro-style exit (Zhu et al. 2025, arXiv 2510.25741):

    lambda_t = sigmoid(w . LN(h_t[answer]) + b)       t = 1..T, per example (LN without parameters)
    p_t      = lambda_t prod_{j<t} (1 - lambda_j)      t < T
    p_T      = prod_{j<T} (1 - lambda_j)               the remaining mass (lambda_T is not used)

    objective = sum_t p_t L_t - beta H(p)              L_t: the example's loss after t loops
              = sum_t p_t L_t + beta KL(p || U_T) - beta log T     (uniform prior U_T over 1..T)

    inference: exit at the first t with sum_{j<=t} p_j >= q (at T where none), or at a fixed t.

w and b start at 0 (every lambda_t = 1/2), so the gate draws nothing from the RNG.

LoopFormer-style budgets (arXiv 2025/26, "Elastic-Depth Looped Transformers ..."): a budget of L
loops is a schedule of L steps of size dt = 1/L; loop k runs at time t_k = (k - 1) / L with step dt.
Every pre-LayerNorm of TF_loop (norm1, norm2 of each loop layer) is modulated

    LN(h) -> LN(h) (1 + gamma) + beta,   (gamma, beta) = MLP([sin, cos](t_k w_i), [sin, cos](dt w_i))

with one (gamma, beta) pair of width D per norm, the MLP's last layer zero-initialised (so a fresh
model computes exactly the unconditioned loop). Outside an explicit schedule (``with cond.steps(...)``)
the model runs the *full trajectory* of the training budget T (dt = 1/T), continued with the same dt
beyond T, so ``model(x, n)`` and ``forward_each_loop`` read prefixes of the full trajectory.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("none", "ouro", "loopformer")
HELP = {
    "adaptive": "adaptive depth: none (fixed T, Eq. 3 loss), ouro (learned exit gate, expected loss over "
                "the exit distribution + entropy regulariser), loopformer (loops conditioned on time and "
                "step size, shortcut-consistency loss) (default: none)",
    "exit_beta": "ouro: weight beta of the entropy regulariser -beta H(p), uniform prior over 1..T "
                 "(default: 0.05; a float >= 0)",
    "consistency": "loopformer: weight of the shortcut-consistency loss, MSE of a sampled short "
                   "trajectory's output to the detached full one (default: 0.1, as in LoopFormer; a float >= 0)",
}


def answer_position(weight: torch.Tensor) -> int:
    """The last scored token of a prompt (``weight`` (n,)): where the gate reads the state."""
    idx = torch.nonzero(weight > 0)
    if idx.numel() == 0:
        raise ValueError("weight has no scored position: the exit gate needs an answer token")
    return int(idx[-1, 0])


# -- Ouro: the gate, the exit distribution, the threshold rule, the objective -----------------------
class ExitGate(nn.Module):
    """lambda = sigmoid(w . LN(h[:, answer]) + b): (B, n, D) -> (B,)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, answer: int) -> torch.Tensor:
        z = F.layer_norm(h[:, answer].float(), (h.shape[-1],))
        return torch.sigmoid(self.proj(z)[..., 0])


def exit_distribution(lam: torch.Tensor) -> torch.Tensor:
    """lam (T, ...) in [0, 1] -> p (T, ...): p_t = lam_t prod_{j<t}(1 - lam_j) for t < T, the rest on T."""
    if lam.shape[0] < 1:
        raise ValueError("lam has no loop: expected shape (T, ...) with T >= 1")
    survive = torch.cumprod(1 - lam[:-1], dim=0)                          # prod_{j<=t}(1 - lam_j), t < T
    before = torch.cat([torch.ones_like(lam[:1]), survive])               # prod_{j<t}, t = 1..T
    return torch.cat([lam[:-1] * before[:-1], before[-1:]])


def threshold_exit(p: torch.Tensor, q: float) -> torch.Tensor:
    """p (T, B) -> (B,) int64, 1-based: the first t with cumulative mass >= q (T where none)."""
    _check_threshold(q)
    hit = p.cumsum(0) >= q
    hit[-1] = True
    return hit.to(torch.int8).argmax(0).long() + 1


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) over dim 0, with 0 log 0 = 0: (T, ...) -> (...)."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(0)


def ouro_objective(losses: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """losses, p (T, B) -> scalar: mean_b [sum_t p_t L_t - beta H(p)]."""
    return ((p * losses).sum(0) - beta * entropy(p)).mean()


def _check_threshold(q) -> None:
    if not (isinstance(q, (int, float)) and 0 < q <= 1):
        raise ValueError(f"threshold={q!r} is invalid: expected a float in (0, 1]")


@torch.no_grad()
def ouro_run(model, x: torch.Tensor, max_loops: int, answer: int, threshold: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference with the threshold rule: each example loops until its cumulative exit mass reaches
    ``threshold`` (or ``max_loops``); only running examples are computed, exited ones are frozen.
    Returns (output (B, n, o), loops (B,) int64)."""
    _check_threshold(threshold)
    gate = model.exit_gate
    h = model.run_pre(model.embed(x))
    e = h if model.cfg.input_injection else None
    B = h.shape[0]
    loops = torch.full((B,), max_loops, dtype=torch.long, device=h.device)
    cdf = torch.zeros(B, device=h.device)
    alive = torch.ones(B, device=h.device)                                # prod_{j<t}(1 - lambda_j)
    running = torch.ones(B, dtype=torch.bool, device=h.device)
    for t in range(1, max_loops + 1):
        idx = running.nonzero()[:, 0]
        if idx.numel() == 0:
            break
        h_t = model.run_loop(h[idx], t, None if e is None else e[idx])
        h = h.index_copy(0, idx, h_t)
        if t == max_loops:
            break
        lam = gate(h_t, answer)
        cdf[idx] += lam * alive[idx]
        alive[idx] *= 1 - lam
        stop = cdf[idx] >= threshold
        loops[idx[stop]] = t
        running[idx[stop]] = False
    return model.run_post(h), loops


# -- LoopFormer: time and step-size conditioning -----------------------------------------------------
def sinusoid(x: float, dim: int) -> torch.Tensor:
    """[sin(x w_i), cos(x w_i)], w_i = 1000^(1 - i/half), i < half = dim/2: (dim,). x in [0, 1]."""
    half = dim // 2
    w = 1000.0 ** (1 - torch.arange(half, dtype=torch.float64) / half)
    return torch.cat([torch.sin(x * w), torch.cos(x * w)]).float()


class LoopConditioning(nn.Module):
    """Scale and shift of every pre-LayerNorm of TF_loop from embeddings of (t, dt) (module docstring)."""

    def __init__(self, norms: list[nn.LayerNorm], d_model: int, full_budget: int,
                 emb_dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        if not norms:
            raise ValueError("loopformer conditioning needs pre-LayerNorms in TF_loop (pre_norm=True layers)")
        self.n_norms, self.d_model, self.emb_dim = len(norms), d_model, emb_dim
        self.full_budget = int(full_budget)
        self.mlp = nn.Sequential(nn.Linear(2 * emb_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, self.n_norms * 2 * d_model))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self._schedule: list[float] | None = None
        self._mod: torch.Tensor | None = None
        for i, norm in enumerate(norms):
            norm.register_forward_hook(self._hook(i))

    @contextmanager
    def steps(self, schedule: list[float]):
        """Run the loops inside with these step sizes (loop k: dt = schedule[k-1], t = sum of the earlier)."""
        if not schedule or not all(isinstance(s, float) and 0 < s <= 1 for s in schedule):
            raise ValueError(f"schedule={schedule!r} is invalid: expected a non-empty list of floats in (0, 1]")
        old, self._schedule = self._schedule, list(schedule)
        try:
            yield
        finally:
            self._schedule = old

    @contextmanager
    def budget(self, L: int):
        """L loops of step 1/L (a LoopFormer budget)."""
        if not (isinstance(L, int) and L >= 1):
            raise ValueError(f"budget={L!r} is invalid: expected an integer >= 1")
        with self.steps([1.0 / L] * L):
            yield

    def time_of(self, k: int) -> tuple[float, float]:
        """(t, dt) of loop k (1-based) under the current schedule (the full trajectory by default)."""
        s = self._schedule or [1.0 / self.full_budget]
        dts = s[:k] + [s[-1]] * max(k - len(s), 0)
        return float(sum(dts[:-1])), float(dts[-1])

    def enter(self, k: int) -> None:
        """Called by the model before loop k: sets the modulation that the norm hooks apply."""
        t, dt = self.time_of(k)
        emb = torch.cat([sinusoid(t, self.emb_dim), sinusoid(dt, self.emb_dim)]).to(self.mlp[0].weight)
        self._mod = self.mlp(emb).view(self.n_norms, 2, self.d_model)

    def _hook(self, i: int):
        def apply(module, inputs, out):
            if self._mod is None:
                raise RuntimeError("LoopConditioning: a loop ran without enter(t)")
            gamma, beta = self._mod[i, 0], self._mod[i, 1]
            return out * (1 + gamma.to(out.dtype)) + beta.to(out.dtype)
        return apply


def consistency_loss(short: torch.Tensor, full: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Shortcut consistency: MSE of the short trajectory's outputs (B, n, o) to the *detached* full
    trajectory's, over the scored positions (weight (n,)); the gradient flows through ``short`` only."""
    err = (short.float() - full.detach().float()).pow(2).mean(-1)         # (B, n)
    return (err * weight).sum() / (weight.sum() * err.shape[0])


# -- attaching to a model ---------------------------------------------------------------------------
def attach(model, mode: str, train_loops: int):
    """Give ``model`` the modules of ``mode`` (their parameters join its state dict: ``exit_gate.*``,
    ``loop_condition.*``). Returns the model. ``none`` leaves it unchanged."""
    if mode not in MODES:
        raise ValueError(f"adaptive={mode!r} is invalid: expected one of {', '.join(MODES)}")
    D = model.cfg.d_model
    if mode == "ouro":
        model.exit_gate = ExitGate(D)
    elif mode == "loopformer":
        norms = [m for layer in model.loop for m in (layer.norm1, layer.norm2) if isinstance(m, nn.LayerNorm)]
        model.loop_condition = LoopConditioning(norms, D, train_loops)
    return model


def budgets(T: int) -> list[int]:
    """The budgets a LoopFormer run is trained on and evaluated at: 1..T."""
    return list(range(1, T + 1))


def uniform_kl(p: torch.Tensor) -> torch.Tensor:
    """KL(p || uniform over T) = log T - H(p) (the prior of the regulariser), (T, ...) -> (...)."""
    return math.log(p.shape[0]) - entropy(p)
