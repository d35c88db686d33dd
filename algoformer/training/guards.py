"""What ``train`` and ``evaluate`` check before any work, and how a running job stops cleanly.

    UsageError        a bad argument: one line on stderr, exit status 2, nothing written
    RunStopped        a run that stopped on its own (interrupt, divergence, memory): one line, its exit code
    check_folder      an output folder (created later with its parents): not empty, not a file, writable
    check_file        an output file: not empty, not a folder, its folder exists and is writable
    check_device      cpu | cuda | cuda:K | auto, CUDA present, K a visible device
    check_memory      a lower bound on what a step needs, against the memory available now
    check_step_memory the model, one training step and the evaluation batch against that memory
    Interrupts        SIGINT / SIGTERM set a flag that the training loop reads between two steps
    Divergence        the first step whose loss is NaN or infinite, tracked without a host sync
    Progress          tqdm on a terminal, a plain line every 10% elsewhere
    json_safe, dumps  JSON without bare NaN / Infinity (they become null)

Exit codes (``docs/training.md``): 0 done, 2 bad arguments or out of memory, 3 the loss became NaN or
infinite, 128 + the signal number after SIGINT (130) or SIGTERM (143).
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

EXIT_USAGE, EXIT_DIVERGED = 2, 3


class UsageError(Exception):
    """A bad argument or configuration: reported as one line, exit status 2."""


class RunStopped(Exception):
    """The run stopped before its last step (interrupt, divergence, memory): ``code`` is the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def one_line(e: BaseException | str) -> str:
    """The message on one line (an argument holding a newline must not split it)."""
    return str(e).replace("\r", "\\r").replace("\n", "\\n")


# -- output paths ----------------------------------------------------------------------------------
def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_folder(value: str, flag: str) -> Path:
    """An output folder: created (with missing parents) when the work starts, so it must not be
    empty, nor an existing file, nor under a file, and the nearest existing folder must be writable."""
    if not str(value).strip():
        raise UsageError(f"{flag}={value!r} is invalid: expected a folder path (an empty path would write "
                         "into the current directory)")
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag}={value!r} is invalid: it is an existing file, expected a folder")
    top = _nearest_existing(p)
    if not top.is_dir():
        raise UsageError(f"{flag}={value!r} is invalid: {str(top)!r} is a file, not a folder")
    if not os.access(top, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={value!r} is invalid: the folder {str(top)!r} is not writable")
    return p


def make_folder(p: Path, flag: str) -> None:
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag}={str(p)!r} is invalid: the folder cannot be created ({e.strerror})") from None


def check_file(value: str, flag: str) -> Path:
    """An output file: not empty, not a folder, in an existing writable folder (never renamed)."""
    if not str(value).strip():
        raise UsageError(f"{flag}={value!r} is invalid: expected a file path")
    p = Path(value)
    if p.is_dir():
        raise UsageError(f"{flag}={value!r} is invalid: it is a folder, expected a file path")
    parent = p.parent
    if not parent.exists():
        raise UsageError(f"{flag}={value!r} is invalid: its folder {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{flag}={value!r} is invalid: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{flag}={value!r} is invalid: it is not writable")
    return p


# -- device and memory -----------------------------------------------------------------------------
def check_device(name: str, flag: str = "--device", allow_auto: bool = True) -> str:
    """The device name, validated: cpu, cuda, cuda:K (K a visible device) or auto (cuda if present)."""
    allowed = "one of " + ("auto, " if allow_auto else "") + "cpu, cuda, cuda:K"
    if name == "auto" and allow_auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise UsageError(f"{flag}={name!r} is invalid: expected {allowed}")
    if not torch.cuda.is_available():
        raise UsageError(f"{flag}={name!r} is invalid: CUDA is not available on this machine (use cpu)")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise UsageError(f"{flag}={name!r} is invalid: expected cuda:K with K < {torch.cuda.device_count()} "
                         "(the visible CUDA devices)")
    return name


def available_memory(device: str | torch.device) -> tuple[int, str]:
    """(bytes, where): free memory of the CUDA device, or the host's MemAvailable (/proc/meminfo)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available on this host"
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "on this host"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(need: float, device: str | torch.device, what: str, flag: str, value) -> None:
    """Refuse a size whose lower bound ``need`` (bytes) already exceeds the memory available now."""
    avail, where = available_memory(device)
    if need > avail:
        raise UsageError(f"{flag}={value!r} is invalid: {what} needs at least {fmt_bytes(need)}, more than "
                         f"the {fmt_bytes(avail)} {where}; lower {flag}")


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "not enough memory" in text
                                            or "can't allocate memory" in text)


# -- interrupts ------------------------------------------------------------------------------------
class Interrupts:
    """While active, SIGINT and SIGTERM only set ``signum``; the training loop checks it after each
    step, writes a checkpoint and stops (``RunStopped``, code 128 + signum). A second signal stops at
    once, without a checkpoint. Outside the main thread (signals cannot be caught there) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise RunStopped(128 + signum, f"{signal.Signals(signum).name} again: stopped at once, without "
                                           "writing a checkpoint")
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


# -- the running job -------------------------------------------------------------------------------
class Divergence:
    """The first step whose training loss is NaN or infinite, tracked on the device (no host sync per
    step) and read at the checks (log steps, before every checkpoint): ``check`` raises ``RunStopped``."""

    def __init__(self, device: torch.device, ddp, step: int, saved: int | None) -> None:
        self.ddp, self.saved = ddp, saved          # ddp: .on (several processes); saved: the last checkpoint's step
        self.step = torch.full((), step, dtype=torch.long, device=device)
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)

    def update(self, loss: torch.Tensor) -> None:
        self.step += 1
        new = (self.first < 0) & ~torch.isfinite(loss)
        self.first = torch.where(new, self.step, self.first)
        self.value = torch.where(new, loss.float(), self.value)

    def check(self, cfg, step: int, model: torch.nn.Module | None = None) -> None:
        """Raise if a loss so far was not finite, or (``model`` given: before a checkpoint) if a weight is
        not: the update after the last finite loss can already overflow."""
        if model is not None:
            ok = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
            if self.ddp.on:
                ok = ok.to(torch.int32)
                dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if not bool(ok):
                self.first = torch.where(self.first < 0, self.step, self.first)
                self.value = torch.where(self.first == self.step, torch.full_like(self.value, float("nan")),
                                         self.value)
        first, value = self.first, self.value
        if self.ddp.on:                  # every rank stops together, at the earliest rank's step
            key = torch.where(first < 0, torch.full_like(first, 2**62), first)
            dist.all_reduce(key, op=dist.ReduceOp.MIN)
            first = torch.where(key == 2**62, torch.full_like(first, -1), key)
        k = int(first)
        if k >= 0:
            kept = f"the last checkpoint (step {self.saved}) is kept" if self.saved is not None else "no checkpoint written"
            raise RunStopped(EXIT_DIVERGED, f"the training loss (or the weights) became {float(value)} at step {k} "
                             f"(lr={cfg.lr}): the run diverged and stopped at step {step}; {kept}; lower --lr")


def agreed_signal(stop: Interrupts, ddp, logged: bool, device: torch.device) -> int:
    """The signal to stop on now, or 0. One process: after any step. Under DDP the ranks agree at the
    log steps (a signal reaches the ranks at different steps)."""
    if not ddp.on:
        return stop.signum or 0
    if not logged:
        return 0
    t = torch.tensor([stop.signum or 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def step_memory(cfg, world: int = 1) -> dict:
    """Lower bounds (bytes) of what training holds at once, per process: the parameters with their
    gradient and two Adam moments (attention only: 4 D^2 per layer), one D-wide float32 stream per
    layer application kept for the backward pass, and one stream of the evaluation batch."""
    n = cfg.task_spec().n_tokens(cfg.n_points)
    L = cfg.layers if cfg.layers is not None else cfg.model_spec().n_layers
    stages = {"algoformer": (L, L, L), "standard": (L, 0, 0), "looped": (0, L, 0)}[cfg.model]
    T, T0 = cfg.train_loops, max(cfg.train_loops - cfg.delta_T, 0)
    grad_loops = T - T0 if cfg.truncate and cfg.model == "looped" else T
    apps = stages[0] + stages[1] * grad_loops + stages[2] * (T - T0 + 1)
    return {"params": 4 * 4 * cfg.width ** 2 * sum(stages) * 4,
            "step": (cfg.batch_size // world) * n * cfg.width * 4 * max(apps, 1),
            "eval": cfg.eval_batch * n * cfg.width * 4, "apps": apps, "tokens": n}


def check_step_memory(cfg, device: torch.device, world: int = 1) -> None:
    m = step_memory(cfg, world)
    check_memory(m["params"], device, f"the model (width {cfg.width}) with its Adam state", "--width", cfg.width)
    local = cfg.batch_size // world
    what = f"prompts x {m['tokens']} tokens x width {cfg.width} x {m['apps']} layer applications, float32)"
    check_memory(m["step"] / local, device, f"one prompt of a training step (1 {what}", "--n-points", cfg.n_points)
    check_memory(m["step"], device, f"a training step ({local} {what}", "--batch-size", cfg.batch_size)
    check_memory(m["eval"], device, f"the evaluation batch ({cfg.eval_batch} prompts x {m['tokens']} tokens x "
                 f"width {cfg.width})", "--eval-batch", cfg.eval_batch)


class Progress:
    """Progress of a long loop on stderr: a tqdm bar on a terminal, otherwise (a log file, a pipe) one
    plain line each time another 10% is done. ``update(n, what)`` names the current piece of work."""

    def __init__(self, total: int, prog: str, disabled: bool = False, every: int = 10) -> None:
        self.total, self.done, self.prog, self.every = max(int(total), 1), 0, prog, every
        self.disabled, self.next = disabled, every
        self.bar = None
        if not disabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, what: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_description_str(what, refresh=False)
            self.bar.update(n)
        elif not self.disabled:
            pct = 100 * self.done // self.total
            if pct >= self.next:
                print(f"{self.prog}: {pct}% done ({what})", file=sys.stderr, flush=True)
                self.next = (pct // self.every + 1) * self.every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- JSON --------------------------------------------------------------------------------------------
def json_safe(obj):
    """The same structure with NaN / inf floats as None (JSON null) and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, **kwargs) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
