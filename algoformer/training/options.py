"""The command line of ``python -m algoformer.train``: one option per ``TrainConfig`` field, plus the
run controls (--resume, --overwrite, --stop-after, --dry-run, --quiet).

Every option's help shows its default and its allowed values; abbreviations are off
(``allow_abbrev=False``); a bad argument raises ``UsageError`` (one line, exit status 2).
"""
from __future__ import annotations

import argparse
import dataclasses

from . import initialisers
from .config import MAX_LOOPS, MAX_THREADS, TrainConfig
from .guards import UsageError
from .models import MODELS
from .prompts import TASKS

SHAPED = ("width", "heads", "layers", "curriculum")   # dictated by the construction under --init-from

HELP = {
    "task": "the task: {choices} (default: %(default)s)",
    "model": "algoformer (pre/loop/post), standard (GPT-2, no loop) or looped (Yang et al.) "
             "(default: %(default)s)",
    "d": "task dimension d, an integer >= 1 (default: %(default)s, the paper's)",
    "n_points": "in-context samples N, an integer >= 1 (> 3 for ar) (default: %(default)s)",
    "noise": "std of the label noise (ar: of the innovations), a finite float >= 0 (default: %(default)s)",
    "phi_seed": "seed of the fixed representation Phi*, an integer in [0, 2**64 - 1] (default: %(default)s)",
    "width": "model width D, an integer >= 1 divisible by --heads (default: 256; with --init-from: the "
             "construction's)",
    "heads": "attention heads per layer, an integer >= 1 dividing --width (default: 8; with --init-from: "
             "the construction's)",
    "layers": "layers per stage, an integer >= 1 (default: 12 for standard, 1 otherwise; with --init-from: "
              "the construction's)",
    "init_scale": "initialisation: gpt2 (std 0.02) or fan_in (1/sqrt(fan-in), for small widths) "
                  "(default: %(default)s)",
    "T": f"loops in training (Eq. 3), an integer in [1, {MAX_LOOPS}]; ignored by standard "
         "(default: %(default)s)",
    "delta_T": f"loops in the loss (Eq. 3: t = T - delta_T .. T), an integer in [1, {MAX_LOOPS}] "
               "(default: %(default)s)",
    "truncate": "no autograd through the loops before T - delta_T (looped model only), true or false "
                "(default: %(default)s)",
    "curriculum": "Yang et al.'s curriculum over dims, points and loops, true or false (default: true; "
                  "with --init-from: false)",
    "curriculum_interval": "steps between two dims / points increments, an integer >= 1 (default: %(default)s)",
    "loop_interval": "steps between two loop increments, an integer >= 1 (default: %(default)s)",
    "batch_size": "global batch, an integer >= 1 (a multiple of the processes under torchrun; checked "
                  "against the memory available) (default: %(default)s)",
    "lr": "Adam learning rate, a finite float > 0 (default: %(default)s)",
    "warmup": "steps of linear warm-up, an integer in [0, --steps) (default: %(default)s)",
    "schedule": "after warm-up: constant, or cosine decay to --lr-min (default: %(default)s)",
    "lr_min": "the cosine schedule's final learning rate, a float in [0, --lr] (default: %(default)s)",
    "steps": "the last step, an integer >= 1 (with --resume: above the checkpoint's step) (default: %(default)s)",
    "seed": "seed of the initialisation and of the training data, an integer in [0, 2**64 - 1] "
            "(default: %(default)s)",
    "device": "auto (cuda if available), cpu, cuda or cuda:K (default: %(default)s)",
    "threads": f"torch CPU threads, an integer in [0, {MAX_THREADS}] (0 = torch's default) (default: %(default)s)",
    "amp": "bf16 autocast: auto (on GPU, not with --init-from), bf16 or off (default: %(default)s)",
    "compile": "torch.compile the loss module, true or false (default: %(default)s)",
    "attention": "sdpa (torch's fused kernel), exact (explicit softmax) or linear (linear attention, no softmax) (default: %(default)s)",
    "log_every": "steps between two train rows of the metrics (and loss checks), an integer >= 1 "
                 "(default: %(default)s)",
    "eval_every": "steps between two eval rows, an integer >= 0 (0 = at the end only) (default: %(default)s)",
    "eval_batch": "prompts of the fixed evaluation batch, an integer >= 1 (default: %(default)s)",
    "ckpt_every": "steps between two checkpoints, an integer >= 0 (0 = at the end, and on SIGINT / "
                  "SIGTERM) (default: %(default)s)",
    "metrics": "metrics file format: jsonl or csv (default: %(default)s)",
    "out": "the run folder (created with its parents): config.json, metrics, ckpt.pt; an existing run "
           "needs --resume or --overwrite (default: %(default)s)",
    "init_from": "start from constructed weights: {choices} (default: none, from scratch)",
    "adaptive": "adaptive depth: {choices}; none (fixed T, Eq. 3 loss), ouro (learned exit gate, expected "
                "loss over the exit distribution + entropy regulariser), loopformer (loops conditioned on time "
                "and step size, shortcut-consistency loss) (default: %(default)s)",
    "exit_beta": "ouro: weight beta of the entropy regulariser -beta H(p), uniform prior over 1..T, a finite "
                 "float >= 0 (default: %(default)s)",
    "consistency": "loopformer: weight of the shortcut-consistency loss (MSE of a sampled short trajectory's "
                   "output to the detached full one), a finite float >= 0 (default: %(default)s, as in LoopFormer)",
}
CHOICES = {"task": tuple(TASKS), "model": MODELS, "init_scale": ("gpt2", "fan_in"),
           "schedule": ("constant", "cosine"), "amp": ("auto", "bf16", "off"), "attention": ("sdpa", "exact", "linear"),
           "metrics": ("jsonl", "csv"), "adaptive": ("none", "ouro", "loopformer")}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):          # one line, no usage block, status 2
        raise UsageError(message)


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true or false), got {s!r}")


def _help(name: str) -> str:
    choices = CHOICES.get(name) or (initialisers.available() if name == "init_from" else ())
    return HELP[name].replace("{choices}", ", ".join(choices) or "none registered")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=description, allow_abbrev=False)
    for f in dataclasses.fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-")] + (["--dim"] if f.name == "d" else [])   # torchrun: "--d"
        common = {"dest": f.name, "help": _help(f.name)}
        if f.name in SHAPED:        # None = not given: the default, or the construction's (--init-from)
            p.add_argument(*flags, type=_bool if f.type == "bool" else int, default=None,
                           metavar="BOOL" if f.type == "bool" else None, **common)
        elif f.type == "bool":
            p.add_argument(*flags, type=_bool, default=f.default, metavar="BOOL", **common)
        elif f.name == "init_from":
            p.add_argument(*flags, default=None, metavar="NAME", **common)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(*flags, type=kind, default=f.default, **common)    # TrainConfig validates
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its ckpt.pt "
                   "(bit-exact; only the fields that may change can differ) (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its "
                   "ckpt.pt, config.json and metrics are deleted first) (default: off)")
    p.add_argument("--stop-after", type=int, default=0, help="stop (as if preempted) after this step, having "
                   "written a checkpoint, an integer >= 0 (0 = run to --steps) (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="check the arguments, the output folder and the "
                   "memory, print the configuration, and exit without training or writing (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    return p


def parse(argv: list[str] | None, parser: argparse.ArgumentParser) -> tuple[TrainConfig, argparse.Namespace]:
    args = parser.parse_args(argv)
    try:
        _fill_shaped(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.stop_after < 0:
        raise UsageError(f"--stop-after={args.stop_after} is invalid: expected an integer >= 0")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite are exclusive: continue the run in --out, or replace it")
    try:
        cfg = TrainConfig(**known(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg, args


def _fill_shaped(args: argparse.Namespace) -> None:
    """Flags left out take the default, or under --init-from the construction's value (the curriculum
    off); a flag given explicitly is kept, and TrainConfig rejects one that conflicts."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shape = None
    if args.init_from is not None:
        plugin = initialisers.load(args.init_from)
        if args.task in plugin.tasks and (args.model == "algoformer"):
            shape = plugin.shape(TrainConfig(**{**known(args), "width": 1, "heads": 1, "layers": None,
                                                "curriculum": False, "init_from": None}))
    for name in SHAPED:
        if getattr(args, name) is None:
            value = defaults[name] if args.init_from is None else \
                (False if name == "curriculum" else getattr(shape, name, defaults[name]))
            setattr(args, name, value)


def known(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}
