"""Decoder prompts for the paper's tasks (Section 5.1), built from the generators in ``algoformer.tasks``.

Shapes: B batch, N in-context samples, n tokens, d token width (= task dim), o output width.

Convention (Garg et al. 2022, Yang et al. 2024): regression prompts are x_1, y_1, ..., x_N, y_N as
2N tokens, y padded to d with zeros; the model predicts y_i at the token of x_i (it sees x_1..y_{i-1}
and x_i). AR(q): the tokens are x_1 .. x_N and token t predicts x_{t+1} (scored once a full window
of q values is visible). Chain of thought: each sample contributes L + 1 tokens x, s^1, .., s^L and
token s^l predicts s^{l+1}.

A ``Prompt`` says which positions are scored (``weight``) and which in-context sample each scored
position belongs to (``sample``), so one loss and one per-sample error curve serve every task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import tasks

TaskName = Literal["linear", "representation", "ar", "cot"]
TASKS: tuple[str, ...] = ("linear", "representation", "ar", "cot")


@dataclass(frozen=True)
class Prompt:
    tokens: np.ndarray            # (B, n, d) float32
    targets: np.ndarray           # (B, n, o) float32, zero where not scored
    weight: np.ndarray            # (n,) 1.0 at scored positions, else 0.0
    sample: np.ndarray            # (n,) in-context sample index of each scored position, -1 elsewhere
    x: np.ndarray | None = None   # (B, N, d) regression inputs (for the numpy baselines), else None
    y: np.ndarray | None = None   # (B, N, 1) observed regression labels, else None


@dataclass(frozen=True)
class TaskSpec:
    """One of the paper's tasks at its full size; ``sample`` draws a batch at a curriculum stage."""
    name: TaskName
    d: int = 20                   # token width = x dimension (paper: 20)
    noise: float = 0.0            # label noise sigma (regression) or innovation sigma (AR)
    q: int = 3                    # AR order (paper: 3)
    L: int = 6                    # chain-of-thought length (paper: 6)
    phi_seed: int = 0             # seed of the fixed representation Phi* (shared by all problems)

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task={self.name!r} is invalid: expected one of {', '.join(TASKS)}")
        if not (isinstance(self.d, int) and self.d >= 1):
            raise ValueError(f"d={self.d!r} is invalid: expected an integer >= 1")
        if not self.noise >= 0:
            raise ValueError(f"noise={self.noise!r} is invalid: expected a float >= 0")
        object.__setattr__(self, "_phi", self._make_phi())

    @property
    def d_out(self) -> int:
        return 1 if self.name in ("linear", "representation") else self.d

    @property
    def uses_dim_curriculum(self) -> bool:
        """Only regression prompts can embed a smaller problem by zeroing coordinates."""
        return self.name in ("linear", "representation")

    def n_tokens(self, n_points: int) -> int:
        return {"linear": 2 * n_points, "representation": 2 * n_points, "ar": n_points,
                "cot": n_points * (self.L + 1)}[self.name]

    @property
    def phi(self) -> tasks.MLP | None:
        """The fixed representation Phi* (representation: R^d -> R^d; AR: R^{qd} -> R^d), else None."""
        return self._phi

    def _make_phi(self) -> tasks.MLP | None:
        rng = np.random.default_rng(self.phi_seed)
        if self.name == "representation":
            return tasks.random_mlp(rng, [self.d] * 4)                  # 3 layers, R^d -> R^d
        if self.name == "ar":
            return tasks.random_mlp(rng, [self.q * self.d] + [self.d] * 3)  # R^{qd} -> R^d
        return None

    def sample(self, rng: np.random.Generator, B: int, n_points: int, d_active: int | None = None) -> Prompt:
        if self.name in ("linear", "representation"):
            x = tasks.gaussian_inputs(rng, B, n_points + 1, self.d, d_active)
            return regression_prompt(tasks.regression_from_inputs(rng, x, self._phi, 1, self.noise))
        if self.name == "ar":
            seq, _ = tasks.ar_sequence(rng, B, self._phi, self.q, n_points, self.d, self.noise)
            return ar_prompt(seq, self.q)
        states, _ = tasks.chain_of_thought(rng, B, n_points, self.d, self.L)
        return cot_prompt(states[:, :n_points])


def regression_prompt(problem: tasks.Regression) -> Prompt:
    B, N, d, m = problem.sizes
    if m != 1:
        raise ValueError(f"m={m!r} is invalid: decoder regression prompts need scalar labels (m = 1)")
    tokens = np.zeros((B, 2 * N, d), dtype=np.float32)
    tokens[:, 0::2] = problem.x                      # x_i at even positions
    tokens[:, 1::2, 0] = problem.y[..., 0]           # y_i padded with zeros at odd positions
    targets = np.zeros((B, 2 * N, 1), dtype=np.float32)
    targets[:, 0::2] = problem.y                     # y_i is predicted at the token of x_i
    weight = np.zeros(2 * N, dtype=np.float32)
    weight[0::2] = 1.0
    sample = np.full(2 * N, -1)
    sample[0::2] = np.arange(N)
    return Prompt(tokens, targets, weight, sample, problem.x, problem.y)


def ar_prompt(seq: np.ndarray, q: int) -> Prompt:
    """seq (B, N + 1, d): tokens x_1..x_N, token t predicts x_{t+1}; scored from t = q - 1 on
    (earlier targets are the random initial values, which no model can predict)."""
    B, n1, d = seq.shape
    N = n1 - 1
    weight = np.zeros(N, dtype=np.float32)
    weight[q - 1:] = 1.0
    sample = np.where(weight > 0, np.arange(N), -1)
    return Prompt(seq[:, :N].astype(np.float32), seq[:, 1:].astype(np.float32), weight, sample)


def cot_prompt(states: np.ndarray) -> Prompt:
    """states (B, N, L + 1, d): tokens x, s^1, .., s^L per sample; token s^l predicts s^{l+1}."""
    B, N, L1, d = states.shape
    tokens = states.reshape(B, N * L1, d).astype(np.float32)
    targets = np.zeros_like(states)
    targets[:, :, :-1] = states[:, :, 1:]
    step_scored = np.r_[np.ones(L1 - 1), 0.0].astype(np.float32)  # the last state has no successor
    weight = np.tile(step_scored, N)
    sample = np.where(weight > 0, np.repeat(np.arange(N), L1), -1)
    return Prompt(tokens, targets.reshape(B, N * L1, d).astype(np.float32), weight, sample)
