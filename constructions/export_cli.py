"""Export a training run, or check an export, from the command line (``constructions.export``).

    python -m constructions.export_cli run RUN OUT      # RUN/ckpt.pt -> OUT.safetensors, OUT.json
    python -m constructions.export_cli check OUT        # read OUT back with every check, print a summary

Reading runs no code from either file: the run's checkpoint goes through
``algoformer.training.safe_load`` (weights-only unpickling, CRCs, schema, every tensor against the
config), the export through ``export_check``. A refused or damaged file, and any bad argument, exit
with status 2 and one line on stderr. ``run`` refuses to overwrite an existing export unless
``--overwrite`` is given, and checks that before reading the run.
"""
from __future__ import annotations

import argparse
import sys

import torch

from algoformer.training.guards import UsageError
from algoformer.training.options import Parser as _Parser
PROG = "constructions.export_cli"




def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m {PROG}", allow_abbrev=False, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", allow_abbrev=False, help="export a training run's checkpoint")
    r.add_argument("run", help="a run folder written by algoformer.train (holding ckpt.pt)")
    r.add_argument("out", help="the export's path without suffix: OUT.safetensors and OUT.json are written")
    r.add_argument("--overwrite", action="store_true", help="replace an existing export at OUT")
    c = sub.add_parser("check", allow_abbrev=False, help="read an export back with every check")
    c.add_argument("path", help="the export's path (with or without .safetensors / .json)")
    return p


def _check_out(out: str, overwrite: bool) -> None:
    from .export import _paths
    for f in _paths(out):
        if f.exists() and not overwrite:
            raise UsageError(f"out={out!r} is invalid: {f} exists (pass --overwrite to replace it)")
        parent = f.parent if f.parent.exists() else next(p for p in f.parents if p.exists())
        if not parent.is_dir():
            raise UsageError(f"out={out!r} is invalid: {parent} is not a folder")


def main(argv: list[str] | None = None) -> int:
    from algoformer.evaluate import UsageError as RunError

    from .export import export_run, load_construction, load_model
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            _check_out(args.out, args.overwrite)
            print(f"{PROG}: run={args.run} out={args.out} (float32 state dict, cpu) torch={torch.__version__}",
                  flush=True)
            st, js = export_run(args.run, args.out)
            print(f"wrote {st} and {js}")
        else:
            model, meta = load_model(args.path)
            kind = "a construction" if meta.get("layout") is not None else "a trained model"
            if meta.get("layout") is not None:
                load_construction(args.path)
            params = sum(t.numel() for t in model.state_dict().values())
            print(f"{args.path}: {kind}, width {model.cfg.d_model}, {len(model.cfg.pre)}/{len(model.cfg.loop)}/"
                  f"{len(model.cfg.post)} pre/loop/post layers, {params:,} parameters, dtype {meta['dtype']}: "
                  "every check passed")
    except (UsageError, RunError, ValueError) as e:        # ExportError and CheckpointError are ValueErrors
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
