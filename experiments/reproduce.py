"""Reproductions of the papers' figures at CPU scale (issue 17, part 1), one command per figure.

    python experiments/reproduce.py NAME [NAME ...] [--jobs 2] [--runs-root runs/repro] [--results docs/results]
    python experiments/reproduce.py all --jobs 2           # every experiment (runs shared between them once)
    python experiments/reproduce.py all --dry-run          # print every command, run nothing
    python experiments/reproduce.py yang-linear --resume   # continue / complete existing runs

Experiments (NAME), each a set of training runs of ``python -m algoformer.train`` and one call of
``python -m algoformer.evaluate`` on them:

  fig2-representation   AlgoFormer Fig. 2a (and Fig. 3 from the same runs): regression with
                        representation, sigma = 0, AlgoFormer / standard / looped, seeds 0, 1, 2
  fig2-ar               AlgoFormer Fig. 2b: AR(q = 3) with representation, innovations N(0, I)
                        (noise 1.0, as in the paper), the three models, seed 0
  yang-linear           Yang et al. 2024's headline: looped (1 layer) against standard (12 layers) on
                        linear regression, seeds 0, 1, 2 each, 2400 steps; Fig. 3 from the same runs
                        (loops to 200: the fixed point)
  fig5-linear           AlgoFormer Fig. 5: AlgoFormer on linear regression against GD and Newton,
                        seed 0 (sigma = 0)

The reduced sizes (COMMON below) and why they keep each comparison faithful: docs/reproductions.md.
Each run trains into RUNS_ROOT/<run> (checkpoints stay there); the small results (config.json,
metrics.jsonl, eval.json, the figures, the exact commands and wall times) are copied to
RESULTS/<experiment>/. Both are checked before anything runs: an existing results folder or run
folder is refused (exit 2) unless --overwrite is given.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import summarise  # noqa: E402  (experiments/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Reduced sizes shared by every run (why: docs/reproductions.md). The paper: d = 20, N = 40, width 256,
# 8 heads, (T, delta_T) = (20, 15), Adam 1e-4, 500K steps; here d = 4, N = 8 (N = 2d as 40 = 2 x 20),
# width 64, 4 heads, (T, delta_T) = (8, 6) (delta_T / T = 0.75 as 15 / 20), 12 layers for the standard
# transformer against 1 (the parameter ratio ~1/12 of Yang et al. is kept), Adam 1e-3.
COMMON = ["--d", "4", "--n-points", "8", "--width", "64", "--heads", "4", "--init-scale", "fan_in",
          "--curriculum", "false", "--T", "8", "--delta-T", "6", "--batch-size", "64", "--lr", "1e-3",
          "--warmup", "100", "--schedule", "constant", "--log-every", "50",
          "--eval-every", "200", "--ckpt-every", "0", "--threads", "1", "--device", "cpu", "--quiet"]

STEPS = 1200
TASKS = {"representation": ["--task", "representation", "--noise", "0.0"],
         "ar": ["--task", "ar", "--noise", "1.0"],
         "linear": ["--task", "linear", "--noise", "0.0"]}


def _run(task: str, model: str, seed: int, steps: int = STEPS) -> tuple[str, list[str]]:
    return f"{task}-{model}-s{seed}", [*TASKS[task], "--model", model, "--seed", str(seed), "--steps", str(steps)]


EXPERIMENTS: dict[str, list[tuple[str, list[str]]]] = {    # `all` runs them in this order
    "yang-linear": [_run("linear", m, s, 2400) for s in (0, 1, 2) for m in ("looped", "standard")],
    "fig2-representation": [_run("representation", m, s) for s in (0, 1, 2) for m in ("algoformer", "standard", "looped")],
    "fig5-linear": [_run("linear", "algoformer", 0)],
    "fig2-ar": [_run("ar", m, 0) for m in ("algoformer", "standard", "looped")],
}
EVAL = ["--max-loops", "200", "--batch", "256", "--seed", "12345", "--device", "cpu"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/reproduce.py", allow_abbrev=False,
                                description="Train and evaluate the reduced-scale reproductions.")
    p.add_argument("names", nargs="+", metavar="NAME", help=f"experiments: all, {', '.join(EXPERIMENTS)}")
    p.add_argument("--jobs", type=int, default=1, help="training processes at once, 1 or 2 (default: 1)")
    p.add_argument("--runs-root", default="runs/repro", help="folder of the run folders (default: runs/repro)")
    p.add_argument("--results", default="docs/results", help="folder of the results (default: docs/results)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps of every run (default: the experiment's: {STEPS}, yang-linear 2400)")
    p.add_argument("--resume", action="store_true",
                   help="continue existing runs to their steps (constant learning rate: the same as training "
                        "that long from the start, bit-exactly on CPU), train missing ones, skip finished ones; "
                        "replaces the results")
    p.add_argument("--overwrite", action="store_true", help="replace existing runs and results")
    p.add_argument("--dry-run", action="store_true", help="check the paths, print every command, run nothing")
    a = p.parse_args(argv)
    names = list(EXPERIMENTS) if a.names == ["all"] else a.names
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        p.error(f"NAME={bad[0]!r} is invalid: expected all or one of {', '.join(EXPERIMENTS)}")
    if a.jobs not in (1, 2):
        p.error(f"--jobs={a.jobs} is invalid: expected 1 or 2 (the CPU budget)")
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps={a.steps} is invalid: expected an integer >= 1")
    if a.resume and a.overwrite:
        p.error("--resume and --overwrite are invalid together: expected one of them")
    a.names = names
    return a


def _refuse(message: str) -> None:
    print(f"reproduce: {message}", file=sys.stderr)
    sys.exit(2)


def check_paths(a: argparse.Namespace) -> None:
    """Refuse an existing results folder or run folder (without --overwrite) before any work."""
    if a.overwrite:
        return
    if a.resume:
        for n in a.names:
            for run, _ in EXPERIMENTS[n]:
                folder = Path(a.runs_root) / run
                if folder.exists() and not (folder / "ckpt.pt").is_file():
                    _refuse(f"--resume: run folder {str(folder)!r} exists without a ckpt.pt: remove it")
        return
    for n in a.names:
        res = Path(a.results) / n
        if res.exists():
            _refuse(f"results folder {str(res)!r} exists: pass --overwrite or remove it")
        for run, _ in EXPERIMENTS[n]:
            if (Path(a.runs_root) / run).exists():
                _refuse(f"run folder {str(Path(a.runs_root) / run)!r} exists: "
                         "pass --overwrite or remove it")


def target_steps(a, args: list[str]) -> int:
    return a.steps if a.steps is not None else int(args[args.index("--steps") + 1])


def done_steps(a, run: str) -> int:
    """The last step a run folder's metrics record (0 for a run not started)."""
    m = Path(a.runs_root) / run / "metrics.jsonl"
    rows = [json.loads(x) for x in m.read_text().splitlines() if x.strip()] if m.is_file() else []
    return max((r["step"] for r in rows), default=0)


def train_cmd(a, run: str, args: list[str]) -> list[str]:
    cmd = ["nice", "-n", "10", PY, "-m", "algoformer.train", *COMMON, *args]
    cmd += ["--steps", str(a.steps)] if a.steps is not None else []      # the last --steps wins
    cmd += ["--out", str(Path(a.runs_root) / run)] + (["--overwrite"] if a.overwrite else [])
    return cmd + (["--resume"] if a.resume and (Path(a.runs_root) / run / "ckpt.pt").is_file() else [])


def eval_cmd(a, name: str) -> list[str]:
    runs = [str(Path(a.runs_root) / r) for r, _ in EXPERIMENTS[name]]
    return ["nice", "-n", "10", PY, "-m", "algoformer.evaluate", *runs, *EVAL, "--quiet",
            "--out", str(Path(a.runs_root) / f"eval-{name}")]


def execute(cmd: list[str], log: Path) -> tuple[int, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    return rc, time.time() - t0


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    check_paths(a)
    runs = {r: args for n in a.names for r, args in EXPERIMENTS[n]}       # a run shared by two experiments trains once
    order = list(runs)                                                    # the experiments' order
    print(f"reproduce: experiments={a.names} runs={len(order)} jobs={a.jobs} runs_root={a.runs_root} "
          f"results={a.results} python={PY}", flush=True)
    print("reproduce: common options: " + " ".join(COMMON), flush=True)
    cmds = {r: train_cmd(a, r, runs[r]) for r in order}
    if a.dry_run:
        for r in order:
            print(shlex.join(cmds[r]))
        for n in a.names:
            print(shlex.join(eval_cmd(a, n)))
        return 0
    Path(a.runs_root).mkdir(parents=True, exist_ok=True)
    logs = Path(a.runs_root) / "logs"
    logs.mkdir(exist_ok=True)
    walls: dict[str, float] = {}

    def one(r: str) -> tuple[str, int]:
        if a.resume and done_steps(a, r) >= target_steps(a, runs[r]):
            print(f"reproduce: {r} already at step {done_steps(a, r)}: not trained", flush=True)
            return r, 0
        print(f"reproduce: start {r}", flush=True)
        rc, wall = execute(cmds[r], logs / f"{r}.log")
        walls[r] = wall
        print(f"reproduce: done {r} rc={rc} wall={wall:.0f}s", flush=True)
        return r, rc

    status = 0
    with ThreadPoolExecutor(a.jobs) as pool:                  # runs in the experiments' order; each
        futures = {r: pool.submit(one, r) for r in order}     # experiment is evaluated once its runs are done
        for n in a.names:
            failed = [r for r, _ in EXPERIMENTS[n] if futures[r].result()[1] != 0]
            if failed:
                print(f"reproduce: {n}: run {failed[0]} failed (logs in {logs}); not evaluated", flush=True)
                status = 1
                continue
            rc, wall = execute(eval_cmd(a, n), logs / f"eval-{n}.log")
            print(f"reproduce: evaluated {n} rc={rc} wall={wall:.0f}s", flush=True)
            status |= rc != 0
            collect(a, n, walls, wall)
            print(summarise.summarise(n, Path(a.results), Path(a.runs_root)), flush=True)
    return status


def collect(a, name: str, walls: dict[str, float], eval_wall: float) -> None:
    """Copy the small results (no checkpoints) and the exact commands to RESULTS/NAME."""
    res = Path(a.results) / name
    if res.exists():
        shutil.rmtree(res)
    res.mkdir(parents=True)
    ev = Path(a.runs_root) / f"eval-{name}"
    for f in ev.glob("*"):
        if f.suffix in (".png", ".json"):
            shutil.copy2(f, res / f.name)
    for r, _ in EXPERIMENTS[name]:
        (res / r).mkdir()
        for f in ("config.json", "metrics.jsonl"):
            shutil.copy2(Path(a.runs_root) / r / f, res / r / f)
    commands = {"train": {r: shlex.join(train_cmd(a, r, args)) for r, args in EXPERIMENTS[name]},
                "evaluate": shlex.join(eval_cmd(a, name)),
                "wall_s": {**{r: (round(walls[r], 1) if r in walls else None) for r, _ in EXPERIMENTS[name]},
                           "evaluate": round(eval_wall, 1)},
                "regenerate": f"python experiments/reproduce.py {name} --jobs 2 --overwrite"
                              + (f" --steps {a.steps}" if a.steps is not None else "")}
    (res / "commands.json").write_text(json.dumps(commands, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
