"""Train an AlgoFormer, the standard transformer or the looped transformer on one of the paper's tasks.

    python -m algoformer.train --task representation --model algoformer --steps 20000 --out runs/rep-algo
    python -m algoformer.train ... --resume              # continue exactly where the run stopped
    torchrun --nproc_per_node 2 -m algoformer.train ...  # DistributedDataParallel (gloo on CPU)

Writes to ``--out``: config.json, metrics.jsonl (or .csv) with train and eval rows, ckpt.pt (atomic).
Bad arguments exit with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import adaptive
from .layer import param_count
from .training import checkpoint, initialisers
from .training.adaptive_loss import make_loss
from .training.config import RESUMABLE_CHANGES, TrainConfig
from .training.loss import masked_mean, position_errors
from .training.metrics import MetricsWriter
from .training.models import build_model


class UsageError(Exception):
    """A bad argument or configuration: reported as one line, exit status 2."""


# -- the command line -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):          # one line, no usage block, status 2
        raise UsageError(message)


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m algoformer.train", description=__doc__.split("\n")[0])
    defaults = TrainConfig.__dataclass_fields__
    for f in dataclasses.fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-")]
        if f.name == "d":
            flags.append("--dim")        # torchrun's parser rejects "--d" as an ambiguous prefix
        if f.name in SHAPED:        # None = not given: the default, or the construction's (--init-from)
            p.add_argument(*flags, type=_bool if f.type == "bool" else int, default=None, dest=f.name,
                           metavar="BOOL" if f.type == "bool" else None)
        elif f.type in ("bool",):
            p.add_argument(*flags, type=_bool, default=f.default, metavar="BOOL", dest=f.name)
        elif f.name == "init_from":
            p.add_argument(*flags, default=None, dest=f.name, metavar="NAME",
                           help="start from constructed weights: " + (", ".join(initialisers.available()) or
                                                                      "none registered"))
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(*flags, type=kind, default=defaults[f.name].default, dest=f.name,
                           help=adaptive.HELP.get(f.name))
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop (as if preempted) after this step, having written a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    try:
        _fill_shaped(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.stop_after < 0:
        raise UsageError(f"--stop-after={args.stop_after} is invalid: expected an integer >= 0")
    try:
        cfg = TrainConfig(**_known(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg, args


SHAPED = ("width", "heads", "layers", "curriculum")   # dictated by the construction under --init-from


def _fill_shaped(args: argparse.Namespace) -> None:
    """Flags left out take the default, or under --init-from the construction's value (the curriculum
    off); a flag given explicitly is kept, and TrainConfig rejects one that conflicts."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shape = None
    if args.init_from is not None:
        plugin = initialisers.load(args.init_from)
        if args.task in plugin.tasks and (args.model == "algoformer"):
            shape = plugin.shape(TrainConfig(**{**_known(args), "width": 1, "heads": 1, "layers": None,
                                                "curriculum": False, "init_from": None}))
    for name in SHAPED:
        if getattr(args, name) is None:
            value = defaults[name] if args.init_from is None else \
                (False if name == "curriculum" else getattr(shape, name, defaults[name]))
            setattr(args, name, value)


def _known(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse(argv)
        summary = train(cfg, resume=args.resume, stop_after=args.stop_after, quiet=args.quiet)
    except UsageError as e:
        print(f"algoformer.train: error: {e}", file=sys.stderr)
        return 2
    if summary["rank"] == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "rank"}))
    return 0


# -- the run ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "gloo" if device == "cpu" or not torch.cuda.is_available() else "nccl"
    dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def choose_device(name: str, ddp: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device={name!r} is invalid: CUDA is not available (use cpu or auto)")
        if ddp.on:
            name = f"cuda:{ddp.local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def _to_device(prompt, device: torch.device):
    pin = device.type == "cuda"
    def move(a):
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return (t.pin_memory() if pin else t).to(device, non_blocking=True)
    return move(prompt.tokens), move(prompt.targets), move(prompt.weight)


def zero_loss(prompt) -> float:
    """The loss of predicting zero on this batch (host-side, no device sync)."""
    err = (prompt.targets.astype(np.float64) ** 2).mean(-1)
    return float((err * prompt.weight).sum() / (prompt.weight.sum() * err.shape[0]))


def train(cfg: TrainConfig, resume: bool = False, stop_after: int = 0, quiet: bool = False) -> dict:
    ddp = setup_distributed(cfg.device)
    try:
        return _train(cfg, ddp, resume, stop_after, quiet)
    finally:
        if ddp.on:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ddp: Dist, resume: bool, stop_after: int, quiet: bool) -> dict:
    device = choose_device(cfg.device, ddp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size % ddp.world:
        raise UsageError(f"batch_size={cfg.batch_size} is invalid: expected a multiple of the "
                         f"{ddp.world} processes")
    out = Path(cfg.out)
    ckpt_path = out / "ckpt.pt"
    ckpt = _load_for_resume(cfg, ckpt_path) if resume else None
    out.mkdir(parents=True, exist_ok=True)

    task, cur = cfg.task_spec(), cfg.curriculum_schedule()
    init = initialisers.load(cfg.init_from).build(cfg) if cfg.init_from is not None else None
    encode = init.encode if init is not None else _same
    torch.manual_seed(cfg.seed)
    model = adaptive.attach(init.model if init is not None else
                            build_model(cfg.model_spec(), cfg.d, task.d_out, task.n_tokens(cfg.n_points)),
                            cfg.adaptive, cfg.train_loops).to(device)
    loss_mod: torch.nn.Module = make_loss(model, cfg.adaptive, cfg.exit_beta, cfg.consistency)
    if ddp.on:
        loss_mod = torch.nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        loss_mod = torch.compile(loss_mod)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, ddp.rank])
    # auto: bf16 on GPU, except from a construction (bf16 loses every construction: README, Precision)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda" and cfg.init_from is None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if len(ckpt["rng"]) != ddp.world:
            raise UsageError(f"the checkpoint was written by {len(ckpt['rng'])} processes, this run has {ddp.world}")
        checkpoint.set_rng_state(rng, ckpt["rng"][ddp.rank])
        step = ckpt["step"]

    metrics = MetricsWriter(out / f"metrics.{cfg.metrics}", enabled=ddp.rank == 0)
    if ddp.rank == 0:
        metrics.truncate_after(step if ckpt is not None else 0)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        _print_header(cfg, model, device, amp, ddp, step, init)

    local_batch = cfg.batch_size // ddp.world
    bar = _progress(cfg.steps, step, disabled=quiet or ddp.rank != 0)
    last = {"loss": float("nan"), "zero_loss": float("nan")}
    t_log, step_log = time.perf_counter(), step
    while step < cfg.steps:
        stage = cur.at(step)
        prompt = encode(task.sample(rng, local_batch, stage["points"],
                                    stage["dims"] if task.uses_dim_curriculum else None))
        tokens, targets, weight = _to_device(prompt, device)
        model.train()
        with autocast:
            loss = loss_mod(tokens, targets, weight, stage["loops"], cfg.delta_T, cfg.truncate)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        opt.step()
        step += 1
        bar.update(1)
        final = step == cfg.steps or step == stop_after
        if step % cfg.log_every == 0 or final:                      # the only host syncs
            loss_val = _mean_over_ranks(loss.detach(), ddp)
            now = time.perf_counter()
            last = {"loss": loss_val, "zero_loss": zero_loss(prompt)}
            metrics.write(step=step, kind="train", **last, T=stage["loops"], points=stage["points"],
                          dims=stage["dims"], samples_per_s=(step - step_log) * cfg.batch_size / (now - t_log))
            t_log, step_log = now, step
            bar.set_postfix(loss=f"{loss_val:.4g}", zero=f"{last['zero_loss']:.3g}", T=stage["loops"])
        if ddp.rank == 0 and ((cfg.eval_every and step % cfg.eval_every == 0) or final):
            metrics.write(step=step, kind="eval", **evaluate_now(cfg, model, device, stage, autocast, encode),
                          T=stage["loops"], points=stage["points"], dims=stage["dims"])
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or final:
            _save(ckpt_path, cfg, model, opt, rng, step, stage, ddp)
        if step == stop_after:
            break
    bar.close()
    metrics.close()
    return {"rank": ddp.rank, "step": step, "final_loss": last["loss"], "zero_loss": last["zero_loss"],
            "out": str(out)}


def _mean_over_ranks(loss: torch.Tensor, ddp: Dist) -> float:
    if ddp.on:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= ddp.world
    return float(loss)


@torch.no_grad()
def evaluate_now(cfg: TrainConfig, model, device, stage: dict, autocast, encode=None) -> dict:
    """Loss at the current curriculum stage after T loops, on a fixed batch (own seed: the training
    RNG is untouched, so evaluating does not change the run)."""
    rng = np.random.default_rng([cfg.seed, 2**31])
    task = cfg.task_spec()
    prompt = (encode or _same)(task.sample(rng, cfg.eval_batch, stage["points"],
                                           stage["dims"] if task.uses_dim_curriculum else None))
    tokens, targets, weight = _to_device(prompt, device)
    model.eval()
    with autocast:
        pred = model(tokens, stage["loops"])
    model.train()
    return {"loss": float(masked_mean(position_errors(pred, targets), weight)), "zero_loss": zero_loss(prompt)}


def _save(path: Path, cfg, model, opt, rng, step: int, stage: dict, ddp: Dist) -> None:
    states = [checkpoint.rng_state(rng)]
    if ddp.on:
        gathered = [None] * ddp.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if ddp.rank == 0:
        checkpoint.save_atomic({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "rng": states, "curriculum": stage, "config": cfg.to_dict()}, path)


def _load_for_resume(cfg: TrainConfig, path: Path) -> dict | None:
    if not path.exists():
        raise UsageError(f"--resume: no checkpoint at {path}")
    ckpt = checkpoint.load(path)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    old, new = {**defaults, **ckpt["config"]}, cfg.to_dict()     # fields added since: their defaults
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        k = changed[0]
        raise UsageError(f"--resume: {k}={new[k]!r} differs from the checkpoint's {old.get(k)!r} "
                         f"(may change: {', '.join(sorted(RESUMABLE_CHANGES))})")
    return ckpt


def _same(prompt):
    return prompt


def _print_header(cfg: TrainConfig, model, device, amp: bool, ddp: Dist, step: int, init=None) -> None:
    layers = cfg.layers if init is not None else cfg.model_spec().n_layers
    print(f"algoformer.train: task={cfg.task} model={cfg.model} d={cfg.d} N={cfg.n_points} "
          f"width={cfg.width} heads={cfg.heads} layers={layers} "
          f"(T, delta_T)=({cfg.train_loops}, {cfg.delta_T}) adaptive={cfg.adaptive}"
          + {"ouro": f" (exit_beta={cfg.exit_beta})", "loopformer": f" (consistency={cfg.consistency})"}.get(cfg.adaptive, ""),
          flush=True)
    if init is not None:
        print(f"  {init.description}", flush=True)
    print(f"  params={param_count(model):,} device={device} dtype=float32 autocast={'bf16' if amp else 'off'} "
          f"compile={cfg.compile} seed={cfg.seed} batch={cfg.batch_size} processes={ddp.world} "
          f"lr={cfg.lr} (warmup={cfg.warmup}, {cfg.schedule}) steps={cfg.steps} start_step={step} out={cfg.out}", flush=True)


def _progress(total: int, initial: int, disabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=disabled, dynamic_ncols=True, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
