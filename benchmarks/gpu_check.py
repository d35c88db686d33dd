"""The one GPU check: everything that needs a CUDA device, in one script, in at most ~8 minutes.

    python benchmarks/gpu_check.py --out gpu_check              # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/check   # the same stages on the CPU, tiny sizes

Stages, each a subprocess of the project's own commands (so they are the code users run):
  1. verify newton and gd on cuda in float64, float32, tf32 and bfloat16 (the tables and verdicts);
  2. benchmarks/train_throughput.py for the three models: bf16 autocast with and without
     torch.compile, then Yang et al.'s looped configuration (samples/s and peak memory);
  3. a short Fig. 2a training: AlgoFormer, the standard and the looped transformer on regression with
     representation at the paper's sizes (d = 20, N = 40, width 256, T = 20), then evaluate's figures.

Everything lands in OUT: ``report.md`` (every stage's command, wall time, exit status and output),
the verifier's JSON and plots, the runs' metrics and the evaluation figures. A stage that fails is
reported and the next one runs; the exit status is 1 if any stage failed. ``--dry-run`` runs every
stage on the CPU at tiny sizes (tf32 needs CUDA and is left out with a note; torch.compile uses the
"eager" backend, which traces with dynamo but skips inductor's code generation, minutes on a CPU), so the script is tested
in CI and cannot rot. OUT must not exist (or pass ``--overwrite``), checked before anything runs.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def stages(out: Path, dry: bool) -> list[tuple[str, list[str]]]:
    dev = "cpu" if dry else "cuda"
    v_sizes = ["--N", "6", "--d", "3", "--problems", "2", "--iters", "2"] if dry else ["--iters", "20"]
    dtypes = "float64,float32,bfloat16" if dry else "float64,float32,tf32,bfloat16"
    out_list = []
    for algo in ("newton", "gd"):
        out_list.append((f"verify {algo} on {dev} ({dtypes})",
                         [PY, "-m", "verify", algo, *v_sizes, "--device", dev, "--dtype", dtypes,
                          "--json", str(out / f"verify_{algo}.json"), "--plot", str(out / f"verify_{algo}.png")]))
    bench = [PY, str(ROOT / "benchmarks" / "train_throughput.py"), "--devices", dev]
    small = ["--steps", "1", "--warmup", "1", "--batch", "2", "--tiny"] if dry else ["--steps", "10", "--warmup", "3"]
    out_list.append(("training throughput, bf16 autocast, eager", [*bench, *small]))
    out_list.append(("training throughput, bf16 autocast, torch.compile", [*bench, *small, "--compile"] + (["--compile-backend", "eager"] if dry else [])))
    out_list.append(("training throughput, Yang et al.'s looped configuration",
                     [*bench, "--mode", "yang", "--rounds", "1", *small]))
    sizes = (["--d", "2", "--n-points", "6", "--width", "16", "--heads", "2", "--T", "2", "--delta-T", "2",
              "--batch-size", "8", "--steps", "2", "--curriculum", "false"] if dry else
             ["--d", "20", "--n-points", "40", "--width", "256", "--heads", "8", "--T", "20", "--delta-T", "15",
              "--batch-size", "64", "--steps", "1500", "--lr", "1e-4", "--warmup", "100"])
    runs = []
    for model in ("algoformer", "standard", "looped"):
        run = out / "runs" / f"fig2a-{model}"
        runs.append(str(run))
        out_list.append((f"Fig. 2a training: {model}",
                         [PY, "-m", "algoformer.train", "--task", "representation", "--model", model, *sizes,
                          "--device", dev, "--seed", "0", "--quiet", "--out", str(run)]))
    out_list.append(("Fig. 2a evaluation", [PY, "-m", "algoformer.evaluate", *runs, "--device", dev,
                                            "--out", str(out / "fig2a")] + (["--batch", "8", "--max-loops", "4"]
                                                                            if dry else [])))
    return out_list


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", default="gpu_check", help="results folder, must not exist (default gpu_check)")
    p.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--timeout", type=int, default=480, help="seconds for all stages together (default 480)")
    a = p.parse_args(argv)
    out = Path(a.out)
    if not a.out or (out.exists() and not a.overwrite):
        print(f"gpu_check: --out {a.out!r} is invalid: expected a folder that does not exist yet "
              "(or pass --overwrite)", file=sys.stderr)
        return 2
    if not out.resolve().parent.is_dir():
        print(f"gpu_check: --out {a.out!r} is invalid: its parent folder does not exist", file=sys.stderr)
        return 2
    if not a.dry_run:
        import torch
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here: run with --dry-run to check the stages on the CPU",
                  file=sys.stderr)
            return 2
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    report = out / "report.md"
    failed = 0
    start = time.monotonic()
    with report.open("w") as f:
        f.write(f"# GPU check ({'dry run on the CPU' if a.dry_run else 'CUDA'})\n\n")
        if a.dry_run:
            f.write("tf32 left out: TF32 matmuls need a CUDA device.\n\n")
        for i, (title, cmd) in enumerate(stages(out, a.dry_run), 1):
            left = a.timeout - (time.monotonic() - start)
            shown = " ".join(c if c != PY else "python" for c in cmd)
            if left <= 0:
                f.write(f"## {i}. {title}\n\nnot run: the time budget ({a.timeout} s) is spent\n\n")
                failed += 1
                continue
            print(f"[{i}] {title}", flush=True)
            t0 = time.monotonic()
            try:
                r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
                status, text = r.returncode, r.stdout + r.stderr
            except subprocess.TimeoutExpired as e:
                status, text = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
                    else (e.stdout or "")
            failed += status != 0
            f.write(f"## {i}. {title}\n\n`{shown}`\n\nexit {status}, {time.monotonic() - t0:.1f} s\n\n"
                    f"```\n{text.strip()[-6000:]}\n```\n\n")
            f.flush()
    print(f"wrote {report} ({failed} stage(s) failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
