"""Smoke tests of experiments/reproduce.py's argument and dry-run paths (no training)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "reproduce.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path):
    runs, res = tmp_path / "runs", tmp_path / "results"
    p = _run("all", "--jobs", "2", "--dry-run", "--runs-root", str(runs), "--results", str(res))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    train = [line for line in lines if "-m algoformer.train" in line]
    evals = [line for line in lines if "-m algoformer.evaluate" in line]
    # yang-linear 2 models x 3 seeds, fig2-representation 3 x 3, fig5-linear 1, fig2-ar 3
    assert len(train) == 19 and len(set(train)) == 19
    assert len(evals) == 4
    assert all("--threads 1" in t and t.startswith("nice -n 10") for t in train)
    assert sum("--steps 2400" in t for t in train) == 6 and sum("--steps 1200" in t for t in train) == 13
    assert sum("--task ar --noise 1.0" in t for t in train) == 3      # the paper's N(0, I) innovations
    assert not runs.exists() and not res.exists()


def test_existing_results_folder_is_refused(tmp_path):
    res = tmp_path / "results"
    (res / "fig2-ar").mkdir(parents=True)
    p = _run("fig2-ar", "--dry-run", "--runs-root", str(tmp_path / "runs"), "--results", str(res))
    assert p.returncode == 2
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and "fig2-ar" in p.stderr
    assert _run("fig2-ar", "--dry-run", "--overwrite", "--runs-root", str(tmp_path / "runs"),
                "--results", str(res)).returncode == 0


def test_bad_arguments_exit_2_naming_the_value(tmp_path):
    for args, word in ((["nosuch"], "nosuch"), (["all", "--jobs", "3"], "--jobs"),
                       (["all", "--steps", "0"], "--steps"), (["all", "--resume", "--overwrite"], "--resume"),
                       (["all", "--ste", "5"], "--ste")):
        p = _run(*args, "--dry-run", "--runs-root", str(tmp_path / "r"), "--results", str(tmp_path / "s"))
        assert p.returncode == 2 and word in p.stderr.strip().splitlines()[-1], (args, p.stderr)
    (tmp_path / "r" / "ar-looped-s0").mkdir(parents=True)                 # a folder without a checkpoint
    p = _run("fig2-ar", "--resume", "--dry-run", "--runs-root", str(tmp_path / "r"), "--results", str(tmp_path / "s"))
    assert p.returncode == 2 and "ckpt.pt" in p.stderr and "ar-looped-s0" in p.stderr


def test_steps_option_overrides_every_experiment(tmp_path):
    p = _run("yang-linear", "fig5-linear", "--steps", "7", "--dry-run", "--runs-root", str(tmp_path / "r"),
             "--results", str(tmp_path / "s"))
    train = [line.split() for line in p.stdout.splitlines() if "-m algoformer.train" in line]
    assert p.returncode == 0 and len(train) == 7
    # argparse keeps the last --steps: the override comes after the experiment's own
    assert all(t[len(t) - 1 - t[::-1].index("--steps") + 1] == "7" for t in train)
