"""The AlgoFormer (Eq. 2): TF_post(TF_loop(... TF_loop(TF_pre(X)) ...)), TF_loop applied T times.

Shapes: B batch, n tokens, D width, T loops (chosen per call), d_in / d_out read-in / read-out widths.

The loop is visible in ``forward``: one set of loop weights, applied ``n_loops`` times. Per-loop
states are read through hook points (``run_with_cache``), never through flags that change what
``forward`` returns. Hook keys:

    hook_embed                      (B, n, D) tokens after the read-in (or the input itself)
    pre.{i}.hook_attn_out           (B, n, D) Attn(X) of pre layer i; likewise hook_resid_post
    pre.{i}.hook_pattern            (B, H, n, n) softmax weights, exact attention path only
    hook_pre                        (B, n, D) output of TF_pre
    loop.{t}.{i}.<...>              the same for loop iteration t = 1..T, layer i
    loop.{t}.hook_state             (B, n, D) the state after t loops
    post.{i}.<...>, hook_post       as above for TF_post

Halting (``forward_halting``, ``run_with_cache(..., halting=...)``; the rule is ``algoformer.halting``):
each example loops until its flag rows are on, or ``max_loops``; only the examples still running are
computed in loop t, so a halting run costs at most what ``max_loops`` fixed loops cost, and it exits
as soon as every example has halted. A halted example's state is frozen (never recomputed).

    loop.{t}.hook_state             (B, n, D) every example's state after loop t (halted ones frozen)
    loop.{t}.hook_running           (B_t,) the examples that ran loop t; loop.{t}.{i}.<...> hold
                                    only those B_t examples
    hook_loops                      (B,) loops each example ran (n_loops for all without halting)
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from .config import AlgoFormerConfig
from .halting import Halted, Halting
from .hooks import HookPoint
from .layer import Layer


class AlgoFormer(nn.Module):
    def __init__(self, cfg: AlgoFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.read_in = nn.Linear(cfg.d_in, D) if cfg.d_in is not None else None
        self.wpe = nn.Parameter(torch.zeros(cfg.n_positions, D)) if cfg.n_positions else None  # (n_max, D)
        self.pre = nn.ModuleList(Layer(c) for c in cfg.pre)
        self.loop = nn.ModuleList(Layer(c) for c in cfg.loop)
        self.post = nn.ModuleList(Layer(c) for c in cfg.post)
        self.final_norm = nn.LayerNorm(D) if cfg.final_norm else None
        self.read_out = nn.Linear(D, cfg.d_out) if cfg.d_out is not None else None
        self.hook_embed = HookPoint("hook_embed")
        self.hook_pre = HookPoint("hook_pre")
        self.hook_state = HookPoint("hook_state")
        self.hook_post = HookPoint("hook_post")
        self.hook_running = HookPoint("hook_running")
        self.hook_loops = HookPoint("hook_loops")
        self.loop_condition = None     # optional: told each loop's number (``algoformer.adaptive``)
        for stack in ("pre", "post"):
            for i, layer in enumerate(getattr(self, stack)):
                layer.set_scope(f"{stack}.{i}.")

    # -- the three stages ---------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.read_in(x) if self.read_in is not None else x   # (B, n, D)
        if self.wpe is not None:
            n = h.shape[1]
            if n > self.wpe.shape[0]:
                raise ValueError(f"sequence length {n} is invalid: expected at most n_positions={self.wpe.shape[0]}")
            h = h + self.wpe[:n]
        return self.hook_embed(h)

    def run_pre(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.pre:
            h = layer(h)
        return self.hook_pre(h)

    def run_loop(self, h: torch.Tensor, t: int, injection: torch.Tensor | None = None) -> torch.Tensor:
        """One application of TF_loop (iteration number t, 1-based, names the hooks)."""
        return self._state_hook(self._loop_layers(h, t, injection), t)

    def _loop_layers(self, h: torch.Tensor, t: int, injection: torch.Tensor | None) -> torch.Tensor:
        if injection is not None:
            h = h + injection
        if self.loop_condition is not None:
            self.loop_condition.enter(t)
        for i, layer in enumerate(self.loop):
            layer.set_scope(f"loop.{t}.{i}.")
            h = layer(h)
        return h

    def _state_hook(self, h: torch.Tensor, t: int) -> torch.Tensor:
        self.hook_state.scope = f"loop.{t}."
        return self.hook_state(h)

    def run_post(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.post:
            h = layer(h)
        h = self.hook_post(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return self.read_out(h) if self.read_out is not None else h

    # -- the model ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, n_loops: int, no_grad_loops: int = 0) -> torch.Tensor:
        """x: (B, n, d_in or D) -> (B, n, d_out or D). The first ``no_grad_loops`` loops run
        without autograd (truncated backpropagation through the loop, as in Yang et al.)."""
        _check_loops(n_loops, no_grad_loops)
        h = self.run_pre(self.embed(x))
        e = h if self.cfg.input_injection else None
        for t in range(1, n_loops + 1):
            with torch.no_grad() if t <= no_grad_loops else nullcontext():
                h = self.run_loop(h, t, e)            # one set of weights, T times
        return self.run_post(h)

    def forward_halting(self, x: torch.Tensor, halting: Halting, max_loops: int) -> Halted:
        """Loop each example until ``halting`` is on for it (read after TF_pre and after every loop),
        or ``max_loops``; TF_post then reads every example's state where it halted. Only the examples
        still running are computed (``running``); the others keep their state, exactly."""
        _check_loops(max_loops, 0)
        h = self.run_pre(self.embed(x))                                    # (B, n, D)
        halting.check(h)
        e = h if self.cfg.input_injection else None
        loops = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)  # (B,)
        running = ~halting.on(h)                                           # (B,) bool
        for t in range(1, max_loops + 1):
            if not running.any():
                break                                                      # every example halted
            self.hook_running.scope = f"loop.{t}."
            idx = self.hook_running(running.nonzero()[:, 0])               # (B_t,)
            h_t = self._loop_layers(h[idx], t, None if e is None else e[idx])
            h = self._state_hook(h.index_copy(0, idx, h_t), t)             # halted rows unchanged
            loops[idx] = t
            running[idx] = ~halting.on(h_t)
        return Halted(self.run_post(h), self.hook_loops(loops))

    def forward_each_loop(self, x: torch.Tensor, n_loops: int, first: int = 0,
                          no_grad_loops: int = 0) -> torch.Tensor:
        """Outputs read after every loop count t = first..n_loops (the Eq. 3 loss needs them all):
        (n_loops - first + 1, B, n, d_out or D). TF_post is applied to each intermediate state."""
        _check_loops(n_loops, no_grad_loops)
        if not 0 <= first <= n_loops:
            raise ValueError(f"first={first!r} is invalid: expected an integer in [0, n_loops={n_loops}]")
        h = self.run_pre(self.embed(x))
        e = h if self.cfg.input_injection else None
        outs = [self.run_post(h)] if first == 0 else []
        for t in range(1, n_loops + 1):
            with torch.no_grad() if t <= no_grad_loops else nullcontext():
                h = self.run_loop(h, t, e)
            if t >= first:
                outs.append(self.run_post(h))
        return torch.stack(outs)

    def run_with_cache(self, x: torch.Tensor, n_loops: int, halting: Halting | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that also returns every hooked tensor by name (see the module docstring).
        With ``halting`` it is ``forward_halting`` with ``max_loops = n_loops``; the output is the
        same tensor as ``Halted.output`` and the loops used are ``cache["hook_loops"]``."""
        cache: dict[str, torch.Tensor] = {}
        with self._attached(cache), torch.no_grad():
            if halting is None:
                out = self.forward(x, n_loops)
                cache["hook_loops"] = torch.full((x.shape[0],), n_loops, dtype=torch.long, device=out.device)
            else:
                out = self.forward_halting(x, halting, n_loops).output
        return out, cache

    @contextmanager
    def _attached(self, cache: dict):
        hooks = [m for m in self.modules() if isinstance(m, HookPoint)]
        for m in hooks:
            m.cache = cache
        try:
            yield
        finally:
            for m in hooks:
                m.cache = None

    # -- loading weights ------------------------------------------------------------------------
    def load_exact(self, state: dict[str, torch.Tensor]) -> None:
        """Load a complete state dict, refusing any missing, unexpected or mis-shaped tensor with a
        message that names the tensor and both shapes. Values are cast to the model's dtype."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"state dict does not match the model: missing {missing}, unexpected {extra}")
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"tensor {name!r} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {tuple(own[name].shape)}")
        ref = next(iter(own.values()))
        self.load_state_dict({k: v.to(dtype=ref.dtype, device=ref.device) for k, v in state.items()})


def _check_loops(n_loops: int, no_grad_loops: int) -> None:
    if not (isinstance(n_loops, int) and n_loops >= 0):
        raise ValueError(f"n_loops={n_loops!r} is invalid: expected an integer >= 0")
    if not (isinstance(no_grad_loops, int) and 0 <= no_grad_loops <= n_loops):
        raise ValueError(f"no_grad_loops={no_grad_loops!r} is invalid: expected an integer in [0, n_loops={n_loops}]")
