"""``python -m verify ALGORITHM``: compile a construction, run it, compare with numpy, sweep temperature.

Bad arguments exit with status 2 and one line naming the argument and what is allowed.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from constructions.linearise import DEFAULT_VARIANT, VARIANTS, is_mirror, odd_values

from . import progress
from . import registry
from .commands import SYMBOLIC_LEMMAS, run_symbolic  # noqa: F401  (their former home was here)
from .interface import Command, Options
from .emulate import tf32_matmuls
from .options import (DTYPE_HELP, NOT_TAKEN, STATUSES, AllVariants, ArgumentError, Parser, _dtypes, _int_in,
                      _positive_float, _refuse, _variants, _views_error, resolve_dtypes, size_error)
from .outputs import OutputError, check_outputs
from .plot import write_plot
from .report import format_config, format_table, split_verdict, verdict_lines, wrap, write_json
from .sweep import PRECISIONS, run_sweep


def add_common(p: argparse.ArgumentParser, algo) -> None:
    step_name, refused = algo.step_name, NOT_TAKEN.get(algo.name, {})

    def add(flag, **kw):
        if flag in refused:
            p.add_argument(flag, nargs="?", action=_refuse(refused[flag]), help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, **kw)
    add("--iters", type=_int_in(0, 10_000), default=20, help="loops T, 0 to 10000 (default 20)")
    p.add_argument("--N", type=_int_in(1, 10_000), default=40, help="in-context samples, 1 to 10000 (default 40)")
    p.add_argument("--d", type=_int_in(1, 1_000), default=20, help="input dimension, 1 to 1000 (default 20)")
    p.add_argument("--problems", type=_int_in(1, 100_000), default=64,
                   help="seeded problems, 1 to 100000 (default 64)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seed of the problems (numpy default_rng) and of the positional embeddings, "
                        "0 to 2^32-1 (default 0)")
    p.add_argument("--dtype", type=_dtypes, default="both", help=f"{DTYPE_HELP} (default both)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu, cuda, or auto (= cuda if available; default auto)")
    add("--variant", type=_variants, default=[DEFAULT_VARIANT],
        help=f"linearisation variant(s): comma list of {', '.join(VARIANTS)}, or all "
             f"(default {DEFAULT_VARIANT})")
    p.add_argument("--x-bound", type=_positive_float, default=100.0,
                   help="declared bound on |x| entries that the gated FFNs assume (default 100)")
    add("--register-bound", type=_positive_float, default=1e8,
        help="declared bound on |registers| that the exact zeroing FFNs assume (default 1e8; "
             "problems whose numpy run exceeds it are listed and left out)")
    if step_name:
        p.add_argument(f"--{step_name}", type=_positive_float, default=None,
                       help=f"step parameter {step_name}, positive (default: chosen from the data"
                            + ("; copy: a grid of beta" if algo.name == "copy" else "") + ")")
    p.add_argument("--json", metavar="PATH", help="write configuration, rows, verdict and notes as JSON")
    p.add_argument("--plot", metavar="PATH", help="write error against temperature as an image (.png, .pdf, .svg)")
    p.add_argument("--show-attention", metavar="PATH",
                   help="write attention heatmaps per head and loop (automatic temperature, first "
                        "dtype and variant, first valid problem) as an image")
    p.add_argument("--show-layout", metavar="PATH",
                   help="write the residual stream by layout row over the loops as an image (same model)")
    p.add_argument("--force", action="store_true", help="overwrite output files that exist (default: refuse)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the configuration line and the verdict (no table, notes or progress)")


def build_parser() -> Parser:
    parser = Parser(prog="python -m verify", allow_abbrev=False,
                    description="Compile the AlgoFormer constructions into weights, run them, and compare "
                                "with plain numpy algorithms over a temperature sweep.",
                    epilog=STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="algorithm", metavar="ALGORITHM", parser_class=Parser)
    sub.required = True
    for entry in registry.entries().values():
        if isinstance(entry, Command):
            p = sub.add_parser(entry.name, help=entry.summary, description=entry.description or entry.summary,
                               allow_abbrev=False)
            entry.add_arguments(p)
            continue
        p = sub.add_parser(entry.name, help=entry.summary, description=entry.summary, allow_abbrev=False,
                           epilog=STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(p, entry)
        if "q" in entry.options:
            p.add_argument("--q", type=_int_in(1, 100), default=3,
                           help="AR order: tokens copied, 1 to 100 and below --N (default 3)")
        if entry.add_arguments is not None:        # its own options; their values go to Options.extra
            common = {a.dest for a in p._actions}
            entry.add_arguments(p)
            p.set_defaults(extra_options=tuple(a.dest for a in p._actions if a.dest not in common))
    return parser


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


def _first_config(algo, args, opts: Options, device: str, dtypes: list[str], variants: list[str] | None) -> dict:
    """What the run is asked to do, printed before any work (the sweep adds what it finds)."""
    c = {"algorithm": algo.name, **{k: getattr(opts, k) for k in ("N", "d") if k not in algo.ignores}}
    if "q" in algo.options:
        c["q"] = opts.q
    if args.iters is not None:
        c["iters"] = args.iters
    c.update(problems=opts.problems, seed=opts.seed, device=device, dtypes=dtypes)
    c.update(opts.extra)                         # an algorithm's own options (Algorithm.add_arguments)
    if variants is not None:
        c["variants"] = variants
    if opts.step is not None:
        c[algo.step_name] = opts.step
    if "x_bound" not in algo.ignores:
        c["x_bound"] = opts.x_bound
    if args.register_bound is not None:
        c["register_bound"] = opts.register_bound
    c["torch"] = torch.__version__
    return c


def _underflowed_step(verdict: list[str], config: dict, step_name: str, dtypes: list[str]) -> list[str]:
    """A step parameter below a dtype's smallest number rounds to 0 in that dtype: where every row then
    lost the signal, the generic verdict would blame the unit roundoff. Say what happened instead."""
    step = config.get(step_name)
    out = list(verdict)
    for dtype in dtypes:
        f = torch.finfo(PRECISIONS[dtype].storage)
        if isinstance(step, float) and 0 < step < f.smallest_normal * f.eps / 2:
            out = [(f"{line.split(':')[0]}: the signal is lost at every temperature: {step_name}={step:.3g} is "
                    f"below {dtype}'s smallest number ({f.smallest_normal * f.eps:.1e}) and rounds to 0 there."
                    if line.startswith(dtype + " ") and "signal is lost" in line else line) for line in out]
    return out


def run_algorithm(args: argparse.Namespace) -> int:
    algo = registry.get(args.algorithm)
    for flag in NOT_TAKEN.get(algo.name, {}):           # not registered for this algorithm
        setattr(args, flag[2:].replace("-", "_"), None)
    device = resolve_device(args.device)
    skipped: list[str] = []
    dtypes = resolve_dtypes(args.dtype, device, skipped)
    iters = 0 if args.iters is None else args.iters
    opts = Options(N=args.N, d=args.d, problems=args.problems, seed=args.seed, x_bound=args.x_bound,
                   register_bound=args.register_bound or Options.register_bound,
                   step=getattr(args, algo.step_name), q=getattr(args, "q", 3),
                   extra={k: getattr(args, k) for k in getattr(args, "extra_options", ())})
    why = size_error(algo, opts, iters) or _views_error(algo, args)
    if why:
        raise ArgumentError(why)
    variants = args.variant
    if isinstance(variants, AllVariants):
        variants = [v for v in variants if algo.supports(v)]
    elif variants is not None:
        bad = [v for v in variants if not algo.supports(v)]
        if bad:
            need = ("mirrored values" if odd_values(bad[0]) else "a sink token" if not is_mirror(bad[0])
                    else "what it declares it lacks (Algorithm.supports)")
            raise ArgumentError(f"argument --variant: {bad[0]!r} needs {need}, which the {algo.name} "
                                f"construction does not provide; expected one of "
                                f"{', '.join(v for v in VARIANTS if algo.supports(v))}")
    try:
        check_outputs({"--json": args.json, "--plot": args.plot, "--show-attention": args.show_attention,
                       "--show-layout": args.show_layout}, args.force)
    except OutputError as e:
        raise ArgumentError(str(e)) from None
    first = _first_config(algo, args, opts, device, dtypes, variants)
    print(format_config(first), flush=True)
    for line in skipped if not args.quiet else ():
        print(line, flush=True)
    with progress.session("sweep", enabled=not args.quiet):
        config, rows = _sweep(algo, opts, iters, variants or [DEFAULT_VARIANT], dtypes, device)
    config["torch"] = torch.__version__
    found = format_config(config, shown=first)
    if found and not args.quiet:
        print(found)
    n = algo.n_tokens(opts)
    if not rows:
        why = list(dict.fromkeys(config.get("excluded", {}).values()))
        verdict, notes = [f"every problem lies outside the construction's assumptions ({'; '.join(why[:2])}"
                          f"{'; ...' if len(why) > 2 else ''}); nothing was run."], []
    else:
        verdict, notes = split_verdict(algo.verdict(rows, n) if algo.verdict
                                       else verdict_lines(rows, n, config.get("arithmetic_floor")))
    verdict = _underflowed_step(verdict, config, algo.step_name, dtypes)
    if rows and not args.quiet:
        print(format_table(rows))
    print("verdict:")
    for line in verdict:
        print(wrap(line))
    if notes and not args.quiet:
        print("notes:")
        for line in notes:
            print(wrap(line))
    if args.json:
        write_json(args.json, config, rows, verdict, notes)
    if not rows:
        for flag in ("--plot", "--show-attention", "--show-layout"):
            if getattr(args, flag[2:].replace("-", "_")):
                print(f"{flag}: not written (nothing was run)", file=sys.stderr)
        return 1
    if args.plot:
        sizes = [f"{k}={getattr(args, k)}" for k in ("N", "d") if k not in algo.ignores]
        write_plot(args.plot, rows, f"{algo.name}: {', '.join(sizes + ([f'T={iters}'] if args.iters else []))}",
                   config)
    if args.show_attention or args.show_layout:
        from .views import cli_views
        try:
            cli_views(algo, opts, config, (variants or [DEFAULT_VARIANT])[0], dtypes[0], iters,
                      args.show_attention, args.show_layout)
        except ValueError as e:      # no automatic temperature keeps the weights in the dtype's range
            print(f"python -m verify: --show-attention/--show-layout not written: {e}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    broken = registry.problems()
    parser = build_parser()
    try:
        if argv and argv[0] in broken and argv[0] not in registry.names():
            raise ArgumentError(f"argument ALGORITHM: {broken[argv[0]]}")
        for message in broken.values():        # one line each; the builtins are unaffected
            print(f"python -m verify: warning: {message}", file=sys.stderr)
        args = parser.parse_args(argv)
        entry = registry.get(args.algorithm)
        if isinstance(entry, Command):
            return entry.run(args)
        return run_algorithm(args)
    except ArgumentError as e:
        print(f"python -m verify: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:        # torch's allocator raises RuntimeError
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        print("python -m verify: error: out of memory; lower --problems, --N, --d or --iters", file=sys.stderr)
        return 2
    except BrokenPipeError:                         # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                                  # 128 + SIGPIPE, as a shell reports it
    except KeyboardInterrupt:
        print("python -m verify: interrupted (each output file is written whole or not at all)", file=sys.stderr)
        return 130
