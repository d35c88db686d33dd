"""``python -m verify ALGORITHM``: compile a construction, run it, compare with numpy, sweep temperature.

Bad arguments exit with status 2 and one line naming the argument and what is allowed.
"""
from __future__ import annotations

import argparse
import sys

import torch

from constructions.linearise import DEFAULT_VARIANT, VARIANTS

from . import subleq
from .algorithms import ALGORITHMS, Options
from .emulate import tf32_matmuls
from .report import format_config, format_table, verdict_lines, write_json, write_plot
from .sweep import PRECISIONS, available, run_sweep


class ArgumentError(Exception):
    pass


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
    names = AllVariants(VARIANTS) if s == "all" else [v.strip() for v in s.split(",")]
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


def resolve_dtypes(s: str, device: str) -> list[str]:
    """The dtype names to run on ``device``. ``all`` skips (with a printed note) those the device
    lacks; naming one the device lacks is an argument error."""
    if s == "all":
        names = [v for v in DTYPE_WORDS["all"] if available(v, device)]
        for v in DTYPE_WORDS["all"]:
            if not available(v, device):
                print(f"note: --dtype all skips {v} (it needs {' or '.join(PRECISIONS[v].devices)}; device={device})")
        return names
    names = list(dict.fromkeys(DTYPE_WORDS.get(s) or [v.strip() for v in s.split(",")]))
    bad = [v for v in names if not available(v, device)]
    if bad:
        allowed = ", ".join(v for v in PRECISIONS if available(v, device))
        raise ArgumentError(f"argument --dtype: {bad[0]!r} needs device "
                            f"{' or '.join(PRECISIONS[bad[0]].devices)}, but device={device}; "
                            f"allowed here: {allowed}, both, all, or a comma list")
    return names


def add_common(p: argparse.ArgumentParser, step_name: str | None) -> None:
    p.add_argument("--iters", type=_int_in(0, 10_000), default=20, help="loops T (default 20)")
    p.add_argument("--N", type=_int_in(1, 10_000), default=40, help="in-context samples (default 40)")
    p.add_argument("--d", type=_int_in(1, 1_000), default=20, help="input dimension (default 20)")
    p.add_argument("--problems", type=_int_in(1, 100_000), default=64, help="seeded problems (default 64)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    p.add_argument("--dtype", type=_dtypes, default="both", help=f"{DTYPE_HELP} (default both)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--variant", type=_variants, default=[DEFAULT_VARIANT],
                   help=f"linearisation variant(s): comma list of {', '.join(VARIANTS)}, or all "
                        f"(default {DEFAULT_VARIANT})")
    p.add_argument("--x-bound", type=_positive_float, default=100.0,
                   help="declared bound on |x| entries that the gated FFNs assume (default 100)")
    p.add_argument("--register-bound", type=_positive_float, default=1e8,
                   help="declared bound on |registers| that the exact zeroing FFNs assume (default 1e8; "
                        "problems whose numpy run exceeds it are listed and left out)")
    if step_name:
        p.add_argument(f"--{step_name}", type=_positive_float, default=None,
                       help=f"step parameter {step_name} (default: chosen from the data)")
    p.add_argument("--json", metavar="PATH", help="write configuration, rows and verdict as JSON")
    p.add_argument("--plot", metavar="PATH", help="write error against temperature as PNG")
    p.add_argument("--show-attention", metavar="PATH",
                   help="write attention heatmaps per head and loop (automatic temperature, first "
                        "dtype and variant, first valid problem) as PNG")
    p.add_argument("--show-layout", metavar="PATH",
                   help="write the residual stream by layout row over the loops as PNG (same model)")
    p.add_argument("--quiet", action="store_true", help="print only the verdict")


def build_parser() -> Parser:
    parser = Parser(prog="python -m verify",
                    description="Compile the AlgoFormer constructions into weights, run them, and compare "
                                "with plain numpy algorithms over a temperature sweep.")
    sub = parser.add_subparsers(dest="algorithm", metavar="ALGORITHM", parser_class=Parser)
    sub.required = True
    for algo in ALGORITHMS.values():
        p = sub.add_parser(algo.name, help=algo.summary, description=algo.summary)
        add_common(p, algo.step_name)
        if "q" in algo.options:
            p.add_argument("--q", type=_int_in(1, 100), default=3, help="AR order: tokens copied (default 3)")
    subleq.add_arguments(sub.add_parser("subleq", help="the SUBLEQ computer of Giannou et al. 2023, exact per loop",
                                        description=subleq.__doc__.splitlines()[0]))
    p = sub.add_parser("symbolic", help="symbolic (sympy) proofs that the built layers compute the steps",
                       description="Build each lemma's layers with symbolic data and parameters, expand "
                                   "Eq. 1 in e^{-C} and c, and compare with the algorithm's step exactly.")
    p.add_argument("lemma", metavar="LEMMA", choices=SYMBOLIC_LEMMAS,
                   help=f"one of {', '.join(SYMBOLIC_LEMMAS)}")
    return parser


SYMBOLIC_LEMMAS = ("pairing", "variants", "A.2", "A.3", "A.4", "A.5", "all")


def run_symbolic(lemma: str) -> int:
    """Print each proof's statement and PROVED/FAILED (with its details); 0 if all hold, else 1."""
    from .symbolic import PROOFS
    names = list(PROOFS) if lemma == "all" else [lemma]
    ok = True
    for name in names:
        proof = PROOFS[name]()
        ok &= proof.passed
        print(f"{name}: {'PROVED' if proof.passed else 'FAILED'}: {proof.statement}")
        for line in proof.details:
            print(f"    {line}")
    return 0 if ok else 1


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("argument --device: 'cuda' requested but no CUDA device is available")
    return name


def _sweep(algo, opts: Options, iters: int, variants: list[str], dtypes: list[str], device: str):
    """The algorithm's sweep. ``run_sweep`` switches TF32 on inside each emulation; a custom sweep
    (which runs the model itself) is run once per dtype, TF32 switched on around the tf32 one."""
    if algo.sweep is None or not any(PRECISIONS[d].tf32 for d in dtypes):
        return (algo.sweep or run_sweep)(algo, opts, iters, variants, dtypes, device)
    config, rows = None, []
    for d in dtypes:
        with tf32_matmuls(PRECISIONS[d].tf32):
            c, r = algo.sweep(algo, opts, iters, variants, [d], device)
        config = config or c
        rows += r
    config["dtypes"] = dtypes
    return config, rows


def run_algorithm(args: argparse.Namespace) -> int:
    algo = ALGORITHMS[args.algorithm]
    device = resolve_device(args.device)
    dtypes = resolve_dtypes(args.dtype, device)
    opts = Options(N=args.N, d=args.d, problems=args.problems, seed=args.seed, x_bound=args.x_bound,
                   register_bound=args.register_bound,
                   step=getattr(args, algo.step_name), q=getattr(args, "q", 3))
    if "q" in algo.options and args.q >= args.N:
        raise ArgumentError(f"argument --q: expected an integer below --N={args.N}, got {args.q}")
    variants = args.variant
    if isinstance(variants, AllVariants):
        variants = [v for v in variants if algo.supports(v)]
    else:
        bad = [v for v in variants if not algo.supports(v)]
        if bad:
            raise ArgumentError(f"argument --variant: {bad[0]!r} needs mirrored values, which the {algo.name} "
                                f"construction does not provide; expected one of "
                                f"{', '.join(v for v in VARIANTS if algo.supports(v))}")
    config, rows = _sweep(algo, opts, args.iters, variants, dtypes, device)
    config["torch"] = torch.__version__
    print(format_config(config))
    if not rows:
        print("verdict: every problem lies outside the construction's assumptions; nothing was run")
        return 1
    if not args.quiet:
        print(format_table(rows))
    verdict = (algo.verdict(rows, 2 * args.N + 2) if algo.verdict
               else verdict_lines(rows, 2 * args.N + 2, config.get("arithmetic_floor")))
    print("verdict:")
    for line in verdict:
        print("  " + line)
    if args.json:
        write_json(args.json, config, rows, verdict)
    if args.plot:
        write_plot(args.plot, rows, f"{algo.name}: N={args.N}, d={args.d}, T={args.iters}")
    if args.show_attention or args.show_layout:
        from .views import cli_views
        cli_views(algo, opts, config, args.variant[0], dtypes[0], args.iters, args.show_attention,
                  args.show_layout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.algorithm == "symbolic":
            return run_symbolic(args.lemma)
        if args.algorithm == "subleq":
            return subleq.run(args)
        return run_algorithm(args)
    except (ArgumentError, *subleq.ERRORS) as e:
        print(f"python -m verify: error: {e}", file=sys.stderr)
        return 2
