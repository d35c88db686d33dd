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
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import adaptive
from .layer import param_count
from .training import checkpoint, initialisers, options
from .training.adaptive_loss import make_loss
from .training.config import RESUMABLE_CHANGES, TrainConfig
from .training.guards import (EXIT_USAGE, Divergence, Interrupts, RunStopped, UsageError, agreed_signal,
                              check_device, check_folder, check_step_memory, dumps, is_out_of_memory, make_folder,
                              one_line)
from .training.loss import masked_mean, position_errors
from .training.metrics import MetricsWriter
from .training.models import build_model


PROG = "python -m algoformer.train"
RUN_FILES = ("ckpt.pt", "config.json", "metrics.jsonl", "metrics.csv")   # what a run writes in --out


def build_parser() -> argparse.ArgumentParser:
    return options.build_parser(PROG, __doc__.split("\n")[0])


def parse(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    return options.parse(argv, build_parser())


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse(argv)
        summary = train(cfg, resume=args.resume, stop_after=args.stop_after, quiet=args.quiet,
                        overwrite=args.overwrite, dry_run=args.dry_run)
    except UsageError as e:
        print(f"algoformer.train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as e:
        print(f"algoformer.train: {one_line(e)}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:       # before the first step: there is nothing to save yet
        print("algoformer.train: interrupted (SIGINT) before the first training step: no checkpoint written",
              file=sys.stderr)
        return 128 + signal.SIGINT
    if summary["rank"] == 0:
        print(dumps({k: v for k, v in summary.items() if k != "rank"}))
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
    name = check_device(name)
    if name.startswith("cuda"):
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


def train(cfg: TrainConfig, resume: bool = False, stop_after: int = 0, quiet: bool = False,
          overwrite: bool = False, dry_run: bool = False) -> dict:
    """Train into ``cfg.out``. An existing run there needs ``resume`` (continue it) or ``overwrite``
    (delete its files first). Raises ``UsageError`` before any work on a bad configuration or output
    folder, and ``RunStopped`` when the run stops early: on SIGINT / SIGTERM (after writing a checkpoint
    at the current step), when the loss becomes NaN or infinite (the weights are not saved), or out of
    memory. ``dry_run``: the checks and the configuration line only; nothing is written."""
    ddp = setup_distributed(cfg.device)
    try:
        return _train(cfg, ddp, resume, stop_after, quiet, overwrite, dry_run)
    finally:
        if ddp.on:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ddp: Dist, resume: bool, stop_after: int, quiet: bool, overwrite: bool,
           dry_run: bool) -> dict:
    device = choose_device(cfg.device, ddp)
    if cfg.batch_size % ddp.world:
        raise UsageError(f"batch_size={cfg.batch_size} is invalid: expected a multiple of the "
                         f"{ddp.world} processes")
    out = check_folder(cfg.out, "--out")
    ckpt_path = out / "ckpt.pt"
    ckpt = _load_for_resume(cfg, ckpt_path, stop_after) if resume else None
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not resume and not overwrite:
        raise UsageError(f"--out={cfg.out!r} is invalid: it already holds a run ({', '.join(existing)}); pass "
                         "--resume to continue it, or --overwrite to replace it")
    check_step_memory(cfg, device, ddp.world)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda" and cfg.init_from is None)
    if dry_run:
        _print_header(cfg, None, device, amp, ddp, ckpt["step"] if ckpt else 0)
        return {"rank": ddp.rank, "dry_run": True, "out": str(out)}
    if ddp.on:
        dist.barrier()                    # every rank has checked --out before rank 0 changes it
    if ddp.rank == 0:
        make_folder(out, "--out")
        if overwrite:
            for f in existing:
                (out / f).unlink()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

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
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    step = 0
    if ckpt is not None:
        try:                                            # names, shapes checked against this model
            checkpoint.restore(ckpt_path, ckpt, model, opt)
        except checkpoint.CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
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
    watch = Divergence(device, ddp, step, step if ckpt is not None else None)
    try:
        with Interrupts() as stop:
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
                watch.update(loss.detach())
                bar.update(1)
                final = step == cfg.steps or step == stop_after
                logged = step % cfg.log_every == 0 or final
                if logged:                                              # the only host syncs
                    loss_val = _mean_over_ranks(loss.detach(), ddp)
                    now = time.perf_counter()
                    last = {"loss": loss_val, "zero_loss": zero_loss(prompt)}
                    metrics.write(step=step, kind="train", **last, T=stage["loops"], points=stage["points"],
                                  dims=stage["dims"], samples_per_s=(step - step_log) * cfg.batch_size / (now - t_log))
                    t_log, step_log = now, step
                    bar.set_postfix(loss=f"{loss_val:.4g}", zero=f"{last['zero_loss']:.3g}", T=stage["loops"])
                    watch.check(cfg, step)
                if ddp.rank == 0 and ((cfg.eval_every and step % cfg.eval_every == 0) or final):
                    metrics.write(step=step, kind="eval", **evaluate_now(cfg, model, device, stage, autocast, encode),
                                  T=stage["loops"], points=stage["points"], dims=stage["dims"])
                signum = agreed_signal(stop, ddp, logged, device)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or final or signum:
                    watch.check(cfg, step, model)                       # never save diverged weights
                    _save(ckpt_path, cfg, model, opt, rng, step, stage, ddp)
                    watch.saved = step
                if signum:
                    raise RunStopped(128 + signum, f"interrupted by {signal.Signals(signum).name} at step {step}: "
                                     f"checkpoint written to {ckpt_path}; continue with the same command and --resume")
                if step == stop_after:
                    break
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        raise RunStopped(EXIT_USAGE, f"out of memory at step {step + 1} (batch_size={cfg.batch_size}, "
                         f"n_points={cfg.n_points}, width={cfg.width}): lower --batch-size; the last checkpoint "
                         f"is {'at step ' + str(watch.saved) if watch.saved is not None else 'none'}") from None
    finally:
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


def _load_for_resume(cfg: TrainConfig, path: Path, stop_after: int) -> dict:
    if not path.exists():
        raise UsageError(f"--resume: no checkpoint at {path} (start the run without --resume, or with "
                         "--overwrite if the folder holds an unfinished run)")
    try:
        ckpt = checkpoint.load(path)                    # never unpickles code (docs/run-folders.md)
    except checkpoint.CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    old, new = {**defaults, **ckpt["config"]}, cfg.to_dict()     # fields added since: their defaults
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        k = changed[0]
        raise UsageError(f"--resume: {k}={new[k]!r} differs from the checkpoint's {old.get(k)!r} "
                         f"(may change: {', '.join(sorted(RESUMABLE_CHANGES))})")
    for flag, value in (("--steps", cfg.steps), ("--stop-after", stop_after or None)):
        if value is not None and value <= ckpt["step"]:
            raise UsageError(f"{flag}={value} is invalid with --resume: expected an integer above the "
                             f"checkpoint's step {ckpt['step']}")
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
    params = f"params={param_count(model):,}" if model is not None else "dry run (nothing written)"
    print(f"  {params} device={device} dtype=float32 autocast={'bf16' if amp else 'off'} "
          f"compile={cfg.compile} seed={cfg.seed} batch={cfg.batch_size} processes={ddp.world} "
          f"lr={cfg.lr} (warmup={cfg.warmup}, {cfg.schedule}) steps={cfg.steps} start_step={step} out={cfg.out}", flush=True)


def _progress(total: int, initial: int, disabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=disabled, dynamic_ncols=True, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
