"""The benchmark scripts run and print their tables (smoke tests at tiny sizes; the figures themselves
are never asserted: speed targets live in the scripts' output, not in tests)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args, header", [
    ("verify_throughput.py", ["--problems", "4", "--temps", "1", "--iters", "2"], "problem*temp*loop/s"),
    ("thread_determinism.py", ["--problems", "2", "--heads", "1,10"], "K of W_O"),
    ("train_throughput.py", ["--steps", "1", "--warmup", "0", "--batch", "2", "--models", "algoformer",
                             "--threads", "1"], "samples/s"),
])
def test_benchmark_runs_and_prints_its_table(script, args, header):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert any(header in line for line in lines)
    assert len(lines) >= 3                          # configuration or header, and at least one row


def test_thread_determinism_refuses_bad_heads_with_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "thread_determinism.py"), "--heads", "0,x"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "thread_determinism.py: error: argument --heads: '0,x' is invalid: expected a comma list of integers >= 1"]
