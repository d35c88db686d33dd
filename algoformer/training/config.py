"""The configuration of one training run: one frozen dataclass, validated field by field.

Defaults are the paper's (Section 5.1): d = 20, N = 40, D = 256, 8 heads, (T, Delta T) = (20, 15),
Adam with lr 1e-4, and Yang et al.'s curriculum. The paper trains 500K steps; the default here is
shorter (set ``steps``).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Literal

from . import initialisers
from .curriculum import Curriculum, yang_curriculum
from .models import MODELS, ModelSpec
from .prompts import TASKS, TaskSpec


MAX_LOOPS = 10_000      # T, delta_T here; evaluate's --max-loops; verify's --iters: the same bound
MAX_THREADS = 1024
SEED_MAX = 2**64 - 1    # torch.manual_seed's range


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _check(cond: bool, field: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field}={value!r} is invalid: expected {allowed}")


@dataclass(frozen=True)
class TrainConfig:
    task: str = "representation"   # linear | representation | ar | cot
    model: str = "algoformer"      # algoformer | standard | looped
    d: int = 20                    # task dimension (paper: 20)
    n_points: int = 40             # in-context samples N (paper: 40)
    noise: float = 0.0             # sigma of the label noise (AR: of the innovations)
    phi_seed: int = 0              # seed of the fixed representation Phi*
    width: int = 256               # D (paper: 256)
    heads: int = 8
    layers: int | None = None      # None = paper default (12 standard, 1 per stage otherwise)
    init_scale: str = "gpt2"       # gpt2 (std 0.02, the paper's backbone) | fan_in (1/sqrt(fan-in): small widths)
    T: int = 20                    # loops in training (Eq. 3; ignored by the standard transformer)
    delta_T: int = 15              # loops in the loss (Eq. 3)
    truncate: bool = True          # no autograd through the loops before T0 (Yang et al.; input-injection models only)
    curriculum: bool = True        # Yang et al.'s curriculum over dims, points, loops
    curriculum_interval: int = 2000   # steps between dims / points increments
    loop_interval: int = 500       # steps between loop increments
    batch_size: int = 64           # global batch (split over DDP ranks)
    lr: float = 1e-4
    warmup: int = 0                # steps of linear learning-rate warm-up from lr / warmup to lr
    schedule: Literal["constant", "cosine"] = "constant"   # after warm-up: constant, or cosine decay to lr_min
    lr_min: float = 0.0            # the cosine schedule's final learning rate
    steps: int = 10000
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:K
    threads: int = 0               # torch CPU threads (0 = torch's default); 1 avoids oversubscription
    amp: Literal["auto", "bf16", "off"] = "auto"   # auto = bf16 autocast on GPU (not with init_from), off on CPU
    compile: bool = False          # torch.compile the loss module
    attention: Literal["sdpa", "exact", "linear"] = "sdpa"   # linear: linear attention (no softmax), fused path
    log_every: int = 50
    eval_every: int = 500          # 0 = only at the end
    eval_batch: int = 256
    ckpt_every: int = 500          # 0 = only at the end
    metrics: Literal["jsonl", "csv"] = "jsonl"
    out: str = "runs/default"
    init_from: str | None = None   # start from a construction's weights (``initialisers``); None = from scratch
    adaptive: Literal["none", "ouro", "loopformer"] = "none"   # adaptive depth (``algoformer.adaptive``)
    exit_beta: float = 0.05        # ouro: entropy-regulariser weight (uniform prior)
    consistency: float = 0.1       # loopformer: shortcut-consistency weight (LoopFormer's 0.1)

    def __post_init__(self) -> None:
        _check(self.task in TASKS, "task", self.task, "one of " + ", ".join(TASKS))
        _check(self.model in MODELS, "model", self.model, "one of " + ", ".join(MODELS))
        for name in ("d", "n_points", "width", "heads", "batch_size", "steps", "log_every",
                     "eval_batch", "curriculum_interval", "loop_interval"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, name, v, "an integer >= 1")
        for name in ("eval_every", "ckpt_every", "warmup"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 0, name, v, "an integer >= 0")
        for name in ("seed", "phi_seed"):
            v = getattr(self, name)
            _check(isinstance(v, int) and 0 <= v <= SEED_MAX, name, v, f"an integer in [0, 2**64 - 1]")
        _check(isinstance(self.threads, int) and 0 <= self.threads <= MAX_THREADS, "threads", self.threads,
               f"an integer in [0, {MAX_THREADS}] (0 = torch's default)")
        _check(_finite(self.noise) and self.noise >= 0, "noise", self.noise, "a finite float >= 0")
        _check(_finite(self.lr) and self.lr > 0, "lr", self.lr, "a finite float > 0")
        _check(self.schedule in ("constant", "cosine"), "schedule", self.schedule, "one of constant, cosine")
        _check(_finite(self.lr_min) and 0 <= self.lr_min <= self.lr, "lr_min", self.lr_min,
               f"a float in [0, lr={self.lr}]")
        _check(self.warmup < self.steps or self.warmup == 0, "warmup", self.warmup,
               f"an integer in [0, steps={self.steps})")
        if self.model != "standard":
            _check(isinstance(self.T, int) and 1 <= self.T <= MAX_LOOPS, "T", self.T,
                   f"an integer in [1, {MAX_LOOPS}] for a looped model")
            _check(isinstance(self.delta_T, int) and 1 <= self.delta_T <= MAX_LOOPS, "delta_T", self.delta_T,
                   f"an integer in [1, {MAX_LOOPS}]")
        if self.task == "ar":
            _check(self.n_points > 3, "n_points", self.n_points, "an integer > q = 3 for the AR task")
        _check(self.init_scale in ("gpt2", "fan_in"), "init_scale", self.init_scale, "one of gpt2, fan_in")
        _check(self.amp in ("auto", "bf16", "off"), "amp", self.amp, "one of auto, bf16, off")
        _check(self.attention in ("sdpa", "exact", "linear"), "attention", self.attention,
               "one of sdpa, exact, linear")
        _check(self.metrics in ("jsonl", "csv"), "metrics", self.metrics, "one of jsonl, csv")
        _check(isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               "device", self.device, "one of auto, cpu, cuda, cuda:K")
        self._check_adaptive()
        self.task_spec(), self.curriculum_schedule()   # their own validation
        if self.init_from is None:
            self.model_spec()
        else:
            self._check_init()

    def _check_adaptive(self) -> None:
        from ..adaptive import MODES
        _check(self.adaptive in MODES, "adaptive", self.adaptive, "one of " + ", ".join(MODES))
        for name in ("exit_beta", "consistency"):
            v = getattr(self, name)
            _check(isinstance(v, (int, float)) and 0 <= v < math.inf, name, v, "a finite float >= 0")
        if self.adaptive != "none":
            _check(self.model != "standard", "model", self.model,
                   f"algoformer or looped with adaptive={self.adaptive!r} (the standard transformer has no loop)")
            _check(self.init_from is None, "init_from", self.init_from,
                   f"none with adaptive={self.adaptive!r} (trained from scratch)")

    def _check_init(self) -> None:
        """The construction dictates the model: task, model kind, fixed N, width, heads, layers."""
        plugin, name = initialisers.load(self.init_from), repr(self.init_from)
        _check(self.task in plugin.tasks, "task", self.task, f"one of {', '.join(plugin.tasks)} with init_from={name}")
        _check(self.model == "algoformer", "model", self.model,
               f"algoformer with init_from={name} (the constructions are pre/loop/post AlgoFormers)")
        _check(not self.curriculum, "curriculum", self.curriculum,
               f"false with init_from={name} (the construction is built for n_points={self.n_points})")
        shape = plugin.shape(self)
        for field, want, what in (("width", shape.width, "the construction's width"),
                                  ("heads", shape.heads, f"the most heads per layer; {shape.detail}"),
                                  ("layers", shape.layers, "the most layers per stage")):
            _check(getattr(self, field) == want, field, getattr(self, field),
                   f"{want} with init_from={name} ({what}; leave --{field} out)")

    # -- the pieces --------------------------------------------------------------------------------
    def task_spec(self) -> TaskSpec:
        return TaskSpec(self.task, d=self.d, noise=self.noise, phi_seed=self.phi_seed)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, width=self.width, heads=self.heads, layers=self.layers,
                         attention=self.attention, init_scale=self.init_scale)

    @property
    def train_loops(self) -> int:
        return self.T if self.model != "standard" else 0

    def curriculum_schedule(self) -> Curriculum:
        return yang_curriculum(self.d, self.n_points, self.train_loops, self.curriculum,
                               self.curriculum_interval, self.loop_interval)

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): a pure function of the step, so a resumed
        run continues the schedule exactly. Warm-up: lr (step + 1) / warmup; then constant, or a
        cosine from lr to lr_min over the remaining steps."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        frac = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * min(frac, 1.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Fields that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "eval_every", "eval_batch", "ckpt_every", "device",
                               "compile", "out", "threads"})
