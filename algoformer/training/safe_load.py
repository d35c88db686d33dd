"""Reading a run's checkpoint without running code from it, and checking it before use.

A checkpoint (``ckpt.pt``, written by ``algoformer.train``) is a ``torch.save`` zip archive whose
pickle holds only tensors and plain values: dicts, lists, tuples, strings, numbers, booleans, None.
Unpickling an arbitrary file runs whatever callables its pickle names (``__reduce__``), so this
module never unpickles with ``weights_only=False``. ``read_checkpoint`` takes three steps, each of
which refuses a file with one line (``CheckpointError``) naming the file and what is wrong:

1. the bytes: the file must be a zip archive whose every member passes its CRC-32 (Python's
   ``zipfile``: pure parsing, nothing is unpickled), so a truncated file or a flipped byte is caught
   here;
2. the pickle: ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which rebuilds
   tensors and containers and refuses every other global. Flaws found in it before torch 2.6
   (CVE-2025-32434) are the reason for ``MIN_TORCH``;
3. the schema: the keys ``algoformer.train`` writes, with the types and ranges it writes them in
   (every tensor of the model finite, the numpy generator state accepted by a fresh generator of
   its kind, the torch RNG state a byte tensor of the right length).

``restore`` then loads the weights and optimizer state into the freshly built model, checking
every tensor's name and shape against it first, so a checkpoint that does not fit its own config
is named tensor by tensor instead of failing inside ``load_state_dict``.

A file that only the unrestricted unpickler could read is refused with the command that converts
it once, explicitly (``python -m algoformer.training.convert_checkpoint``: it warns that it unpickles).
"""
from __future__ import annotations

import math
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

MIN_TORCH = "2.6"
CONVERT = "python -m algoformer.training.convert_checkpoint {path} --trust-and-unpickle"
KEYS = ("step", "model", "config")                      # what evaluating and exporting need
RESUME_KEYS = ("optimizer", "rng", "curriculum")        # what resuming needs too (checked when present)
PLAIN = (str, int, float, bool, type(None))
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: one line naming the file and what is wrong. ``unsafe``: it
    was refused because only the unrestricted unpickler could read it (``convert_checkpoint``)."""

    def __init__(self, message: str, unsafe: bool = False) -> None:
        super().__init__(message)
        self.unsafe = unsafe


def _fail(path: Path, what: str, unsafe: bool = False):
    raise CheckpointError(f"{path}: {what}", unsafe)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# -- 1. the bytes ----------------------------------------------------------------------------------
def check_archive(path: Path) -> None:
    """The file is a zip archive (what ``torch.save`` writes) and every member passes its CRC."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        _fail(path, f"cannot be opened ({_first_line(e)})")
    if head[:1] == b"\x80":
        _fail(path, "is a bare pickle, not a torch.save zip archive: refusing to unpickle it (if you "
                    f"trust whoever wrote it, convert it once: {CONVERT.format(path=path)})", unsafe=True)
    if head != b"PK\x03\x04":
        _fail(path, f"is not a checkpoint: a torch.save zip archive starts with b'PK\\x03\\x04', this "
                    f"file with {head!r} ({path.stat().st_size} bytes)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        _fail(path, f"is truncated or corrupt ({path.stat().st_size} bytes; the zip index at its end "
                    f"cannot be read: {_first_line(e)})")
    if bad is not None:
        _fail(path, f"is corrupt: the stored data {bad!r} fails its CRC-32 check")


# -- 2. the pickle ---------------------------------------------------------------------------------
def _unsafe_globals(path: Path) -> list[str]:
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:                       # read without unpickling; a failure leaves the generic line
        return []


def unpickle_weights_only(path: Path):
    if not torch.__version__ >= MIN_TORCH:
        _fail(path, f"not loaded: reading checkpoints safely needs torch >= {MIN_TORCH} (weights-only "
                    f"loading in older versions has known flaws, CVE-2025-32434); installed {torch.__version__}")
    try:
        with warnings.catch_warnings():     # e.g. "pickle protocol 4": the error line says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                  # the file's bytes are untrusted: every failure is one line
        if "weights only load failed" in str(e).lower() or "unsupported global" in str(e).lower():
            names = _unsafe_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(e))[:5]
            found = f" ({', '.join(names)})" if names else ""
            _fail(path, f"refusing to unpickle it: it refers to Python objects beyond tensors and plain "
                        f"values{found}, and unpickling those would run code. If you trust whoever wrote "
                        f"it, convert it once: {CONVERT.format(path=path)}", unsafe=True)
        _fail(path, f"cannot be read as a checkpoint ({_first_line(e)})")


# -- 3. the schema ---------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_tensor(path: Path, where: str, t, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(path, f"{where} is a {type(t).__name__}, expected a tensor")
    if floating and t.is_floating_point():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            _fail(path, f"tensor {where} of shape {tuple(t.shape)} holds {bad} non-finite values (NaN or "
                        f"inf): the run had diverged, or the file was altered")


def _check_plain(path: Path, where: str, v) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, (str, int)):
                _fail(path, f"{where} has a key of type {type(k).__name__}, expected str or int")
            _check_plain(path, f"{where}[{k!r}]", x)
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_plain(path, f"{where}[{i}]", x)
    elif isinstance(v, float) and not math.isfinite(v):
        _fail(path, f"{where}={v!r} is not finite")
    elif not isinstance(v, PLAIN + (torch.Tensor,)):
        _fail(path, f"{where} is a {type(v).__name__}, expected a plain value")


def check_numpy_state(path: Path, where: str, state) -> None:
    """A fresh generator of the named kind accepts the state (numpy checks each field's range)."""
    if not isinstance(state, dict) or state.get("bit_generator") not in BIT_GENERATORS:
        name = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
        _fail(path, f"{where}: bit_generator={name!r} is invalid: expected one of {', '.join(BIT_GENERATORS)}")
    _check_plain(path, where, state)
    try:
        getattr(np.random, state["bit_generator"])().state = state
    except Exception as e:
        _fail(path, f"{where} is not a valid {state['bit_generator']} state ({_first_line(e)})")


def check_schema(path: Path, ckpt) -> dict:
    if not isinstance(ckpt, dict):
        _fail(path, f"holds a {type(ckpt).__name__}, expected the dict algoformer.train writes")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        _fail(path, f"is not an algoformer.train checkpoint: missing key(s) {', '.join(missing)} "
                    f"(it has {', '.join(map(str, ckpt)) or 'none'})")
    if not (_is_int(ckpt["step"]) and ckpt["step"] >= 0):
        _fail(path, f"step={ckpt['step']!r} is invalid: expected an integer >= 0")
    model = ckpt["model"]
    if not (isinstance(model, dict) and model and all(isinstance(k, str) for k in model)):
        _fail(path, "model is not a state dict (a non-empty dict from tensor names to tensors)")
    for name, t in model.items():
        _check_tensor(path, f"model[{name!r}]", t)
    for key in RESUME_KEYS:
        if key in ckpt:
            _CHECKS[key](path, ckpt[key])
    cfg = ckpt["config"]
    if not (isinstance(cfg, dict) and all(isinstance(k, str) for k in cfg)):
        _fail(path, "config is not a dict of the run's configuration fields")
    for k, v in cfg.items():
        if not isinstance(v, PLAIN):
            _fail(path, f"config[{k!r}] is a {type(v).__name__}, expected a plain value")
    return ckpt


def _check_optimizer(path: Path, opt) -> None:
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
            and isinstance(opt.get("param_groups"), list)):
        _fail(path, "optimizer is not an optimizer state dict (a dict with 'state' and 'param_groups')")
    _check_plain(path, "optimizer", opt)
    for pid, entry in opt["state"].items():
        for k, t in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(t, torch.Tensor):
                _check_tensor(path, f"optimizer['state'][{pid!r}][{k!r}]", t)


def _check_rng(path: Path, rng) -> None:
    if not (isinstance(rng, list) and rng):
        _fail(path, "rng is not a non-empty list of per-process RNG states")
    n_torch = torch.get_rng_state().numel()
    for i, r in enumerate(rng):
        if not (isinstance(r, dict) and "numpy" in r and "torch" in r):
            _fail(path, f"rng[{i}] is not a dict with 'numpy' and 'torch' states")
        check_numpy_state(path, f"rng[{i}]['numpy']", r["numpy"])
        for key in ("torch", "cuda"):
            t = r.get(key)
            if t is None and key == "cuda":
                continue
            _check_tensor(path, f"rng[{i}][{key!r}]", t, floating=False)
            if t.dtype != torch.uint8 or t.ndim != 1 or (key == "torch" and t.numel() != n_torch):
                _fail(path, f"rng[{i}][{key!r}] is a {t.dtype} tensor of shape {tuple(t.shape)}, expected "
                            f"torch.uint8 of shape ({n_torch if key == 'torch' else 'n'},)")


def _check_curriculum(path: Path, cur) -> None:
    if not (isinstance(cur, dict) and all(_is_int(cur.get(k)) and cur[k] >= 0 for k in ("dims", "points", "loops"))):
        _fail(path, f"curriculum={cur!r} is invalid: expected a dict of integers dims, points, loops")


_CHECKS = {"optimizer": _check_optimizer, "rng": _check_rng, "curriculum": _check_curriculum}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, read without running code from it and checked (module docstring)."""
    path = Path(path)
    if not path.is_file():
        _fail(path, "no such file")
    check_archive(path)
    return check_schema(path, unpickle_weights_only(path))


# -- restoring into a model --------------------------------------------------------------------------
def check_state_fits(path: Path, state: dict, model: torch.nn.Module, what: str = "model") -> None:
    """Names, shapes of ``state`` against the model built from the run's config."""
    own = model.state_dict()
    for name in own:
        if name not in state:
            _fail(path, f"{what}: tensor {name!r} of shape {tuple(own[name].shape)} is missing (the config "
                        f"builds it; the checkpoint has {len(state)} tensors)")
    for name, t in state.items():
        if name not in own:
            _fail(path, f"{what}: tensor {name!r} of shape {tuple(t.shape)} is not in the model the "
                        f"config builds")
        if tuple(t.shape) != tuple(own[name].shape):
            _fail(path, f"{what}: tensor {name!r} has shape {tuple(t.shape)}, the model the config "
                        f"builds has {tuple(own[name].shape)}")


def check_optimizer_fits(path: Path, state: dict, opt: torch.optim.Optimizer) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = state["param_groups"]
    ids = [i for g in groups if isinstance(g, dict) for i in g.get("params", ())]
    if len(groups) != len(opt.param_groups) or len(ids) != len(params):
        _fail(path, f"optimizer: {len(groups)} parameter group(s) holding {len(ids)} parameters, the "
                    f"model has {len(opt.param_groups)} holding {len(params)}")
    by_id = dict(zip(ids, params))
    for pid, entry in state["state"].items():
        if pid not in by_id or not isinstance(entry, dict):
            _fail(path, f"optimizer: state for parameter {pid!r}, which no parameter group holds")
        for k, t in entry.items():
            if isinstance(t, torch.Tensor) and t.ndim and tuple(t.shape) != tuple(by_id[pid].shape):
                _fail(path, f"optimizer: tensor state[{pid}][{k!r}] has shape {tuple(t.shape)}, its "
                            f"parameter has {tuple(by_id[pid].shape)}")


def restore(path: str | Path, ckpt: dict, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load the checkpoint's weights (and optimizer state) after checking they fit."""
    path = Path(path)
    check_state_fits(path, ckpt["model"], model)
    if optimizer is not None:
        missing = [k for k in RESUME_KEYS if k not in ckpt]
        if missing:
            _fail(path, f"cannot be resumed: it holds no {', '.join(missing)} (evaluating or exporting it works)")
        check_optimizer_fits(path, ckpt["optimizer"], optimizer)
    try:
        model.load_state_dict(ckpt["model"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        _fail(path, f"does not load into the model its config builds ({_first_line(e)})")
