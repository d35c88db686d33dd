"""The GPU check script runs every stage on the CPU in its dry mode (so it cannot rot while no GPU is
lent), writes its report, and refuses an existing output folder before doing anything."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_dry_run_runs_every_stage_and_reports_each(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                       text=True, timeout=900, cwd=ROOT)
    report = (out / "report.md").read_text()
    assert r.returncode == 0, report[-3000:]
    assert report.count("\nexit 0,") == 9            # 2 verify, 3 throughput, 3 trainings, 1 evaluation
    for needle in ("verify newton on cpu", "torch.compile", "Yang et al.", "Fig. 2a evaluation", "tf32 left out"):
        assert needle in report
    assert (out / "verify_newton.json").is_file() and (out / "fig2a").is_dir()


def test_existing_output_folder_is_refused_before_any_work(tmp_path):
    keep = tmp_path / "mine.txt"
    keep.write_text("user data")
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr
    assert keep.read_text() == "user data" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
