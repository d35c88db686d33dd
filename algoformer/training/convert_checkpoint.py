"""Convert, once and explicitly, a checkpoint that only the unrestricted unpickler can read.

    python -m algoformer.training.convert_checkpoint RUN_OR_CKPT --trust-and-unpickle [--out FILE]

Every loader of this project reads ``ckpt.pt`` with ``torch.load(weights_only=True)``
(``safe_load``), which refuses a pickle that names Python objects beyond tensors and plain values:
a checkpoint written by other code (numpy arrays, a pickled ``nn.Module`` or optimizer, a dataclass
config, a bare pickle). This command reads such a file with ``weights_only=False``: that UNPICKLES
it and runs any code it carries, so it demands ``--trust-and-unpickle`` and warns before doing it.
It rewrites the contents as tensors and plain values (arrays -> tensors, numpy scalars -> numbers,
modules and optimizers -> their state dicts, a numpy Generator -> its bit-generator state,
dataclasses -> dicts), checks the result with the same schema as every loader, and writes it
atomically: in place (the original kept beside it as ``ckpt.pt.unpickled-original``) or to ``--out``.
A checkpoint that already reads safely is left alone. Bad arguments exit 2 with one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import save_atomic
from .options import Parser as _Parser
from .guards import UsageError
from .safe_load import CheckpointError, check_schema, read_checkpoint

BACKUP_SUFFIX = ".unpickled-original"




def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m algoformer.training.convert_checkpoint", allow_abbrev=False,
                description=__doc__.split("\n")[0])
    p.add_argument("path", help="a checkpoint file, or a run folder holding ckpt.pt")
    p.add_argument("--trust-and-unpickle", action="store_true",
                   help="required: the file is unpickled with weights_only=False, which runs any code it carries")
    p.add_argument("--out", default=None, help="write the converted checkpoint here (default: in place)")
    return p


def to_plain(obj, where: str = "checkpoint"):
    """Tensors and plain values only (what ``torch.load(weights_only=True)`` rebuilds)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, torch.Size):
        return tuple(obj)
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int, np.integer)):
                raise CheckpointError(f"{where} has a key of type {type(k).__name__}: cannot convert it")
        return {(k.item() if isinstance(k, np.integer) else k): to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
        return to_plain(obj.state_dict(), where)
    if isinstance(obj, np.random.Generator):
        return to_plain(obj.bit_generator.state, where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj), where)
    raise CheckpointError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: not convertible to "
                          "tensors and plain values")


def _targets(args) -> tuple[Path, Path, Path | None]:
    """(source, destination, backup of the source or None), all checked before any work."""
    src = Path(args.path)
    if src.is_dir():
        src = src / "ckpt.pt"
    if not src.is_file():
        raise UsageError(f"path={args.path!r} is invalid: expected a checkpoint file or a run folder holding ckpt.pt")
    if args.out is None:
        backup = src.with_name(src.name + BACKUP_SUFFIX)
        if backup.exists():
            raise UsageError(f"{backup} exists: an earlier conversion kept the original there; move it away first")
        return src, src, backup
    dst = Path(args.out)
    if dst.exists():
        raise UsageError(f"--out={args.out!r} is invalid: the file exists (choose a new path)")
    if not dst.parent.is_dir():
        raise UsageError(f"--out={args.out!r} is invalid: the folder {dst.parent} does not exist")
    return src, dst, None


def convert(src: Path, dst: Path, backup: Path | None) -> dict:
    print(f"WARNING: unpickling {src} with weights_only=False: this runs any code the file carries. "
          "Do this only for a file whose author you trust.", file=sys.stderr, flush=True)
    try:
        raw = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{src}: cannot be unpickled ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    ckpt = check_schema(src, to_plain(raw))
    tmp = dst.with_name(f".{dst.name}.converted{os.getpid()}")
    save_atomic(ckpt, tmp)
    try:
        read_checkpoint(tmp)                            # the result reads safely, or nothing is replaced
        if backup is not None:
            os.replace(src, backup)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    prog = "algoformer.training.convert_checkpoint"
    try:
        args = build_parser().parse_args(argv)
        src, dst, backup = _targets(args)
        print(f"{prog}: source={src} destination={dst} backup={backup} torch={torch.__version__}", flush=True)
        try:
            read_checkpoint(src)
            print(f"{src} already reads safely (weights_only=True, schema checked): nothing to convert")
            return 0
        except CheckpointError as e:
            if not e.unsafe:                            # truncated, corrupt, not a checkpoint: no fix here
                raise
        if not args.trust_and_unpickle:
            raise UsageError(f"{src} needs the unrestricted unpickler, which runs any code the file carries: "
                             "pass --trust-and-unpickle only if you trust whoever wrote it")
        ckpt = convert(src, dst, backup)
    except (UsageError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    kept = f"; the original is kept as {backup}" if backup is not None else ""
    print(f"converted {src} -> {dst} (step {ckpt['step']}, {len(ckpt['model'])} model tensors){kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
