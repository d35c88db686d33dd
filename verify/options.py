"""Arguments of ``python -m verify``: their types, and the checks made before any work.

    Parser, ArgumentError      argparse that raises instead of exiting (the CLI prints one line, exit 2)
    _int_in, _positive_float,  the option types (each error names what is allowed)
    _variants, _dtypes
    resolve_dtypes             the dtype names a device has
    NOT_TAKEN                  options an algorithm's run does not read: refused by name
    size_error                 sizes the algorithm cannot run (newton N >= d, q < N, memory)
    STATUSES                   the table's statuses and marks (the --help epilog; docs/verify-cli.md)
"""
from __future__ import annotations

import argparse
import os

from constructions.linearise import VARIANTS

from .interface import ArgumentError, Options
from .sweep import PRECISIONS, available


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, never a traceback
        raise ArgumentError(message)


def _int_in(lo: int, hi: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {v}")
        return v
    return parse


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive float, got {s!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite float, got {s!r}")
    return v


class AllVariants(list):
    """``--variant all``: every variant the chosen algorithm's construction supports."""


def _variants(s: str) -> list[str]:
    names = AllVariants(VARIANTS) if s == "all" else list(dict.fromkeys(v.strip() for v in s.split(",")))
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected 'all' or a comma list of {', '.join(VARIANTS)}, got {s!r}")
    return names


DTYPE_WORDS = {"both": ["float64", "float32"], "all": [k for k, p in PRECISIONS.items() if p.attention is None]}
DTYPE_HELP = (f"{', '.join(PRECISIONS)} (+attnNN: the attention in the wider dtype), both (= float64,float32), "
              "all (every plain one the device has), or a comma list")


def _dtypes(s: str) -> str:
    """Checks the names; the device check (tf32 needs CUDA) comes once the device is resolved."""
    if s in DTYPE_WORDS:
        return s
    names = [v.strip() for v in s.split(",")]
    if not s or any(v not in PRECISIONS for v in names):
        raise argparse.ArgumentTypeError(f"expected one of {DTYPE_HELP}, got {s!r}")
    return s


def resolve_dtypes(s: str, device: str, notes: list[str] | None = None) -> list[str]:
    """The dtype names to run on ``device``. ``all`` skips (with a note, printed or added to
    ``notes``) those the device lacks; naming one the device lacks is an argument error."""
    if s == "all":
        names = [v for v in DTYPE_WORDS["all"] if available(v, device)]
        for v in DTYPE_WORDS["all"]:
            if not available(v, device):
                note = f"note: --dtype all skips {v} (it needs {' or '.join(PRECISIONS[v].devices)}; device={device})"
                print(note) if notes is None else notes.append(note)
        return names
    names = list(dict.fromkeys(DTYPE_WORDS.get(s) or [v.strip() for v in s.split(",")]))
    bad = [v for v in names if not available(v, device)]
    if bad:
        allowed = ", ".join(v for v in PRECISIONS if available(v, device))
        raise ArgumentError(f"argument --dtype: {bad[0]!r} needs device "
                            f"{' or '.join(PRECISIONS[bad[0]].devices)}, but device={device}; "
                            f"allowed here: {allowed}, both, all, or a comma list")
    return names


STATUSES = """\
statuses in the table (docs/verify-cli.md):
  ok          the emulation tracks the algorithm: relative error <= 0.5 (copy: and within its bound)
  lost        relative error above 0.5: the signal sank below rounding, or the output sank to ~0
  overflow    a constructed weight (e^C/c, n/c, or copy's beta) lies beyond the dtype's range: not run
  diverged    the run produced inf or NaN
  over-bound  copy only: the raw copy error exceeds 2(n-1) e^(-beta margin) max|x| + (n+2) u
  unzeroed    copy only: within the bound, but an empty window slot is not exactly 0 after the FFN
marks: *auto = the automatic temperature (copy: the default beta); <best = the row the verdict cites
(the smallest prediction error among the ok rows of the sweep)
outputs (--json, --plot, --show-attention, --show-layout) are checked before any work; an existing
file is overwritten only with --force; images take their format from the suffix (.png, .pdf, .svg)"""

# Options an algorithm's run does not read: refused by name instead of being silently accepted.
NOT_TAKEN = {"copy": {"--iters": "copy checks one copy block (Lemma A.3): it has no loops",
                      "--variant": "the copy block has no linearised heads",
                      "--register-bound": "the copy block has no zeroing gates"}}


def _refuse(why: str):
    class Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"argument {option_string}: not taken here ({why})")
    return Refuse


def size_error(algo, opts: Options, iters: int) -> str:
    """Why these sizes cannot run (one line naming the option), or "". Checked before any work."""
    if "q" in algo.options and opts.q >= opts.N:
        return f"argument --q: expected an integer below --N={opts.N}, got {opts.q}"
    if algo.name == "newton" and opts.N < opts.d:
        return (f"argument --N: newton needs N >= d (S = X^T X is d x d of rank <= N, and Newton-Schulz "
                f"targets S^-1, which exists only at full rank); got N={opts.N} < d={opts.d}")
    # the largest arrays: iterates (T+1) N d per problem, decoder-gd's prefix moments N d^2, and the
    # attention patterns, a few n x n with n = 2N + 2 tokens (float64: 8 bytes)
    q = opts.q if "q" in algo.options else 1
    need = 8.0 * opts.problems * ((opts.N + 2) * opts.d * (iters + 2 + opts.d) * q + 4 * (2 * opts.N + 2) ** 2)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have / 2:
        return (f"argument --problems: problems={opts.problems} at N={opts.N}, d={opts.d}, iters={iters} needs "
                f"about {need / 2**30:.3g} GiB, more than half of this machine's {have / 2**30:.3g} GiB; "
                f"lower --problems, --N, --d or --iters")
    return ""


def _views_error(algo, args) -> str:
    if (args.show_attention or args.show_layout) and algo.name == "copy" and args.beta is None:
        flag = "--show-attention" if args.show_attention else "--show-layout"
        return f"argument {flag}: copy sweeps a grid of beta; pass --beta to choose the model to draw"
    return ""
