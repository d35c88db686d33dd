"""``python -m algoformer.train`` on careless input: bad arguments exit 2 with one line and write
nothing; an existing run is never replaced silently; NaN stops the run; SIGINT / SIGTERM leave a
checkpoint from which --resume continues bit-exactly; every option's help shows default and values.

Tiny sizes (d = 3, N = 5, width 16, one thread): the file runs in well under a minute on 2 cores.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from algoformer import train as train_cli
from algoformer.training import options
from algoformer.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--task", "linear", "--dim", "3", "--n-points", "5", "--width", "16", "--heads", "2", "--T", "3",
        "--delta-T", "2", "--batch-size", "8", "--lr", "1e-3", "--curriculum", "false", "--threads", "1",
        "--quiet", "--eval-every", "0", "--attention", "exact"]


def _strict(text: str):
    """json.loads that refuses NaN / Infinity (not JSON)."""
    def bad(c):
        raise ValueError(f"{c} is not JSON")
    return json.loads(text, parse_constant=bad)


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("algoformer.train: error: "), err
    return err


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("not a folder\n")
    return f


BAD = [
    (["--attention", "foo"], "attention"),
    (["--batch-size", "100000000"], "--batch-size=100000000"),
    (["--n-points", "300000000"], "--n-points"),
    (["--width", "4000000", "--heads", "1"], "--width"),
    (["--lr", "inf"], "lr=inf"),
    (["--lr", "nan"], "lr=nan"),
    (["--noise", "inf"], "noise"),
    (["--seed", "-1"], "seed"),
    (["--seed", str(2**64)], "seed"),
    (["--T", "10001"], "T=10001"),
    (["--threads", "100000"], "threads"),
    (["--device", "tpu"], "device"),
    (["--device", "cuda:x"], "device"),
    (["--ste", "3"], "unrecognized arguments: --ste"),         # abbreviations are off
    (["--resume", "--overwrite"], "--overwrite"),
    (["--resume"], "--resume: no checkpoint"),
    (["--compile", "maybe"], "boolean"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_bad_argument_exits_2_with_one_line_and_writes_nothing(args, needle, tmp_path):
    out = tmp_path / "runs" / "x"
    code, stdout, err = _main(TINY + ["--steps", "2", "--out", str(out)] + args)
    assert code == 2 and needle in _one_line_error(err) and stdout == ""
    assert not (tmp_path / "runs").exists()


def test_cuda_without_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = _main(TINY + ["--device", "cuda", "--out", "unused"])
    assert code == 2 and "CUDA is not available" in _one_line_error(err)


@pytest.mark.parametrize("kind", ["empty", "file", "under_a_file"])
def test_bad_output_folder_is_refused_before_any_work(kind, a_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # --out "" must not write into the current folder
    value = {"empty": "", "file": str(a_file), "under_a_file": str(a_file / "run")}[kind]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _main(TINY + ["--steps", "2", "--out", value])
    assert code == 2 and "--out=" in _one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert a_file.read_text() == "not a folder\n"


def test_existing_run_is_refused_and_its_checkpoint_stays_byte_identical(tmp_path):
    out = tmp_path / "run"
    assert _main(TINY + ["--steps", "3", "--out", str(out)])[0] == 0
    files = {f: _digest(out / f) for f in ("ckpt.pt", "config.json", "metrics.jsonl")}
    for extra in ([], ["--steps", "5"], ["--seed", "1"]):
        code, _, err = _main(TINY + ["--steps", "3", "--out", str(out)] + extra)
        assert code == 2 and "--resume" in _one_line_error(err) and "--overwrite" in err
        assert {f: _digest(out / f) for f in files} == files
    code, _, err = _main(TINY + ["--steps", "2", "--out", str(out), "--resume"])     # below the checkpoint
    assert code == 2 and "checkpoint's step 3" in _one_line_error(err)
    assert {f: _digest(out / f) for f in files} == files
    assert _main(TINY + ["--steps", "2", "--seed", "1", "--out", str(out), "--overwrite", "--log-every", "1"])[0] == 0
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 2
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 2]   # train 1, 2; eval 2
    assert _strict((out / "config.json").read_text())["seed"] == 1


def test_dry_run_checks_and_writes_nothing(tmp_path):
    code, stdout, err = _main(TINY + ["--steps", "2", "--out", str(tmp_path / "r"), "--dry-run"])
    assert code == 0 and err == "" and "dry run" in stdout.splitlines()[1]
    assert stdout.splitlines()[0].startswith("algoformer.train: task=linear model=algoformer d=3 N=5")
    assert not (tmp_path / "r").exists()


def test_nan_loss_stops_with_exit_3_and_valid_json(tmp_path):
    """lr 1e3: the loss is NaN by step 3; the run stops there, says so, and the metrics stay JSON."""
    out = tmp_path / "run"
    code, stdout, err = _main(TINY + ["--steps", "50", "--lr", "1e3", "--log-every", "1", "--out", str(out)])
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert "became nan" in err or "became inf" in err
    assert "--lr" in err and "no checkpoint written" in err
    rows = [_strict(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] is None and len(rows) < 50
    assert not (out / "ckpt.pt").exists()


def test_divergence_is_caught_before_a_checkpoint_between_log_steps(tmp_path):
    """The NaN flag is tracked on the device every step and read before every checkpoint: with
    --log-every 100 and --ckpt-every 1 the saved checkpoint is the last finite one."""
    out = tmp_path / "run"
    code, _, err = _main(TINY + ["--steps", "50", "--lr", "1e3", "--log-every", "100", "--ckpt-every", "1",
                                 "--out", str(out)])
    assert code == 3 and "the last checkpoint (step" in err
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    first_bad = int(err.split(" at step ")[1].split()[0])
    assert ckpt["step"] == first_bad - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_summary_line_is_strict_json(tmp_path):
    code, stdout, _ = _main(TINY + ["--steps", "2", "--out", str(tmp_path / "r")])
    assert code == 0 and _strict(stdout.splitlines()[-1])["step"] == 2


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} rows (rc={proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_a_checkpoint_and_resume_is_bit_exact(sig, tmp_path):
    """--ckpt-every 0 (no periodic checkpoint): the signal still leaves one at the current step; the
    resumed run ends with the uninterrupted run's weights and losses, bit for bit."""
    common = TINY + ["--model", "algoformer", "--ckpt-every", "0", "--log-every", "1"]
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "algoformer.train", *common, "--steps", "100000",
                             "--out", str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(out / "metrics.jsonl", 5, proc)
        proc.send_signal(sig)
        stdout, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    assert err.count("\n") == 1 and "Traceback" not in err and sig.name in err and "--resume" in err, err
    step = torch.load(out / "ckpt.pt", weights_only=False)["step"]
    assert 5 <= step < 100000 and f"at step {step}" in err
    final = step + 4
    assert _main(common + ["--steps", str(final), "--out", str(out), "--resume"])[0] == 0
    assert _main(common + ["--steps", str(final), "--out", str(tmp_path / "full")])[0] == 0
    a = torch.load(out / "ckpt.pt", weights_only=False)
    b = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=False)
    assert a["step"] == b["step"] == final
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    loss = lambda p: [(r["step"], r["kind"], r["loss"]) for r in read_metrics(p / "metrics.jsonl")]
    assert loss(out) == loss(tmp_path / "full")


def test_every_option_shows_its_default_and_allowed_values():
    parser = train_cli.build_parser()
    assert parser.allow_abbrev is False
    kinds = {f.name: f.type for f in __import__("dataclasses").fields(options.TrainConfig)}
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = parser._get_formatter()._expand_help(action)
        assert "(default: " in text, action.dest
        for value in options.CHOICES.get(action.dest, ()):
            assert value in text, (action.dest, value)
        kind = kinds.get(action.dest, "")
        if action.dest in options.SHAPED and kind != "bool" or kind == "int":
            assert "integer" in text, action.dest
        elif kind == "float":
            assert "float" in text, action.dest
        elif kind == "bool":
            assert "true or false" in text, action.dest
    r = subprocess.run([sys.executable, "-m", "algoformer.train", "--help"], env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--overwrite" in r.stdout and "--dry-run" in r.stdout


# -- random argument lists -----------------------------------------------------------------------------
FRAGMENTS = [["--steps", "3"], ["--steps", "0"], ["--steps", "x"], ["--d", "2"], ["--dim", "0"], ["--width", "16"],
             ["--heads", "2"], ["--heads", "3"], ["--lr", "1e-3"], ["--lr", "inf"], ["--lr", "nan"], ["--lr", "-1"],
             ["--task", "linear"], ["--task", "cot"], ["--task", "sorting"], ["--model", "looped"],
             ["--model", "standard"], ["--model", "bert"], ["--attention", "foo"], ["--attention", "sdpa"],
             ["--amp", "off"], ["--amp", "fp8"], ["--curriculum", "false"], ["--curriculum", "maybe"],
             ["--seed", "-1"], ["--seed", "7"], ["--batch-size", "100000000"], ["--batch-size", "4"],
             ["--T", "10001"], ["--T", "2"], ["--delta-T", "0"], ["--device", "tpu"], ["--device", "cpu"],
             ["--resume"], ["--overwrite"], ["--init-from", "nope"], ["--init-from", "gd"], ["--threads", "5000"],
             ["--out", ""], ["--noise", "inf"], ["--stop-after", "-1"], ["--warmup", "5"], ["--ste", "3"],
             ["--schedule", "cosine"], ["--lr-min", "1"], ["--n-points", "3"], ["--d"], ["--bogus"], ["x"]]
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6).filter(
    lambda s: not s.startswith("-h") and s not in ("--help",))
_OUT = Path(tempfile.mkdtemp(prefix="train-cli-")) / "never"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.lists(TEXT, min_size=1, max_size=2)), max_size=5))
def test_random_argument_lists_never_raise(parts):
    """Any argument list: exit 0 (a valid dry run) or 2 with one line; never a traceback, never a write."""
    argv = [a for p in parts for a in p] + ["--out", str(_OUT), "--dry-run", "--threads", "1"]
    code, _, err = _main(argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        _one_line_error(err)
    assert not _OUT.exists()
