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
    # 13 distinct runs: linear-looped-s0 is shared by yang-linear and fig5-linear and trains once
    assert len(train) == 13 and len(set(train)) == 13
    assert len(evals) == 4
    assert all("--threads 1" in t and t.startswith("nice -n 10") and "--steps 1200" in t for t in train)
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
    p = _run("fig2-ar", "--resume", "--dry-run", "--runs-root", str(tmp_path / "r"), "--results", str(tmp_path / "s"))
    assert p.returncode == 2 and "ckpt.pt" in p.stderr
