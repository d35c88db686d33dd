"""Checkpoints written atomically, holding everything a resumed run needs to continue bit-exactly:
model, optimizer, step, curriculum stage, and the RNG states (torch, and every rank's numpy generator).

Atomic: the file is written under a temporary name in the same directory, flushed to disk, then
renamed over the old one (``os.replace``), so a run killed at any moment leaves either the previous
checkpoint or the new one, never a torn file.

Loading never runs code from the file: ``load`` is ``safe_load.read_checkpoint`` (a torch.save zip
read with ``weights_only=True``, its CRCs and its schema checked), and ``restore`` checks every
tensor against the freshly built model before loading it. Both raise ``CheckpointError``, one line
naming the file. See docs/run-folders.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .safe_load import CheckpointError, read_checkpoint, restore  # noqa: F401 (the API)


def save_atomic(obj, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    """The checkpoint, read without unpickling anything but tensors and plain values (CheckpointError)."""
    return read_checkpoint(path)


def rng_state(rng: np.random.Generator) -> dict:
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
