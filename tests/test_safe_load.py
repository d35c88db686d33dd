"""Loading a run never runs code from it (algoformer.training.safe_load, docs/run-folders.md).

A malicious checkpoint (a pickle whose __reduce__ writes a marker file) is refused by resume, evaluate
and export, each through its CLI in a subprocess: exit 2, one line, and the marker never appears.
Truncated and corrupted checkpoints give one line naming the file; the explicit conversion command
turns a checkpoint that only the unrestricted unpickler reads into one that resumes bit-exactly.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algoformer import evaluate as evaluate_cli
from algoformer import train as train_cli
from algoformer.training import checkpoint
from algoformer.training.config import TrainConfig
from algoformer.training.convert_checkpoint import BACKUP_SUFFIX, main as convert_main
from algoformer.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--dim", "3", "--n-points", "5", "--width", "16", "--heads", "2", "--T", "3", "--delta-T", "2",
        "--batch-size", "8", "--lr", "1e-3", "--curriculum", "false", "--threads", "1", "--quiet",
        "--task", "representation", "--model", "algoformer", "--eval-every", "0", "--log-every", "5"]


class Payload:
    """Unpickling this runs ``exec`` on a line that writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def _malicious(path: Path, marker: Path, kind: str) -> None:
    obj = {"step": 1, "model": {"w": torch.zeros(2)}, "config": {"task": "linear"}, "extra": Payload(marker)}
    if kind == "zip":                                   # what torch.save writes
        torch.save(obj, path)
    else:                                               # a bare pickle, as older tools wrote
        path.write_bytes(pickle.dumps(obj, protocol=4))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "run"
    assert train_cli.main(TINY + ["--steps", "10", "--ckpt-every", "5", "--out", str(out)]) == 0
    return out


def _one_line_exit_2(r: subprocess.CompletedProcess, *words: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err + r.stdout, err
    assert all(w in err for w in words), err
    return err


@pytest.mark.parametrize("kind", ["zip", "bare"])
def test_the_payload_is_real(tmp_path, kind):
    """The unrestricted unpickler runs it: the refusals below are what stands between it and the marker."""
    marker = tmp_path / "marker"
    _malicious(tmp_path / "evil.pt", marker, kind)
    torch.load(tmp_path / "evil.pt", weights_only=False) if kind == "zip" else \
        pickle.loads((tmp_path / "evil.pt").read_bytes())
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("kind", ["zip", "bare"])
@pytest.mark.parametrize("cli", ["resume", "evaluate", "export"])
def test_malicious_checkpoint_is_refused_by_every_cli(tmp_path, cli, kind):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    run_dir.mkdir()
    _malicious(run_dir / "ckpt.pt", marker, kind)
    cmd = {"resume": ["algoformer.train", *TINY, "--steps", "10", "--out", str(run_dir), "--resume"],
           "evaluate": ["algoformer.evaluate", str(run_dir), "--out", str(tmp_path / "figs")],
           "export": ["constructions.export_cli", "run", str(run_dir), str(tmp_path / "exp")]}[cli]
    r = subprocess.run([sys.executable, "-m", *cmd], env=ENV, capture_output=True, text=True, timeout=120)
    _one_line_exit_2(r, str(run_dir / "ckpt.pt"), "refusing to unpickle", "convert_checkpoint")
    assert not marker.exists()
    assert not (tmp_path / "figs").exists() and not (tmp_path / "exp.safetensors").exists()


def test_convert_demands_the_flag_and_never_unpickles_without_it(tmp_path, capsys):
    marker = tmp_path / "marker"
    _malicious(tmp_path / "ckpt.pt", marker, "zip")
    assert convert_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust-and-unpickle" in err
    assert not marker.exists()


# -- truncated and corrupted checkpoints -----------------------------------------------------------
@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3, 4, 5])
def test_truncated_checkpoint_is_one_line(run, tmp_path, seed, capsys):
    """Cut at a seeded random byte (None: inside the zip's first record); a zip's index is at its end,
    so every cut loses it."""
    data = (run / "ckpt.pt").read_bytes()
    cut = 30 if seed is None else int(np.random.default_rng(seed).integers(4, len(data)))
    bad = tmp_path / "cut"
    bad.mkdir()
    (bad / "ckpt.pt").write_bytes(data[:cut])
    assert evaluate_cli.main([str(bad), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad / "ckpt.pt") in err and "truncated or corrupt" in err, err
    assert f"({cut} bytes;" in err


def _mutated(run: Path, tmp_path: Path, mutate) -> Path:
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    mutate(ckpt)
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(ckpt, bad / "ckpt.pt")
    return bad


def _reshape(name):
    def f(c):
        c["model"][name] = torch.zeros(tuple(c["model"][name].shape) + (2,))
    return f


def _set(*keys, value):
    def f(c):
        d = c
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value
    return f


CORRUPTIONS = {
    "shape": (_reshape("loop.0.attn.w_q"), ["tensor 'loop.0.attn.w_q' has shape (2, 8, 16, 2)", "(2, 8, 16)"]),
    "missing": (lambda c: c["model"].pop("read_out.bias"), ["tensor 'read_out.bias'", "is missing"]),
    "nan": (_set("model", "wpe", value=lambda t: t.index_fill(0, torch.tensor([1]), float("nan"))),
            ["model['wpe']", "non-finite"]),
    "step": (_set("step", value="ten"), ["step='ten' is invalid"]),
    "no-model": (lambda c: c.pop("model"), ["missing key(s) model"]),
    "numpy-state": (_set("rng", 0, "numpy", "state", "state", value=-1), ["rng[0]['numpy']", "PCG64"]),
    "torch-state": (_set("rng", 0, "torch", value=torch.zeros(7, dtype=torch.uint8)), ["rng[0]['torch']", "(7,)"]),
    "adam-moment": (_set("optimizer", "state", 3, "exp_avg", value=torch.zeros(5)), ["state[3]['exp_avg']", "(5,)"]),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_checkpoint_refuses_resume_with_one_line(run, tmp_path, name, capsys):
    mutate, words = CORRUPTIONS[name]
    bad = _mutated(run, tmp_path, mutate)
    assert train_cli.main(TINY + ["--steps", "20", "--out", str(bad), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad / "ckpt.pt") in err, err
    assert all(w in err for w in words), err


def test_flipped_byte_fails_the_crc(run, tmp_path, capsys):
    data = bytearray((run / "ckpt.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF                       # inside the tensor data (torch.load would not notice)
    bad = tmp_path / "flip"
    bad.mkdir()
    (bad / "ckpt.pt").write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "algoformer.train", *TINY, "--steps", "10", "--out", str(bad),
                        "--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    _one_line_exit_2(r, str(bad / "ckpt.pt"), "CRC-32")


# -- checkpoints from before, and the conversion ---------------------------------------------------
def test_current_checkpoints_read_safely_with_their_exact_contents(run):
    ckpt = checkpoint.load(run / "ckpt.pt")
    raw = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 10 and ckpt["rng"][0]["numpy"] == raw["rng"][0]["numpy"]
    assert all(torch.equal(ckpt["model"][k], raw["model"][k]) for k in raw["model"])


def test_conversion_of_a_pickled_object_checkpoint_resumes_bit_exactly(tmp_path, capsys):
    """A checkpoint holding a dataclass config, a numpy Generator and numpy weights (what other code may
    have written) is refused with the conversion command; converted, it resumes bit for bit."""
    common = TINY + ["--steps", "20", "--ckpt-every", "10"]
    assert train_cli.main(common + ["--out", str(tmp_path / "full")]) == 0
    part = tmp_path / "part"
    assert train_cli.main(common + ["--out", str(part), "--stop-after", "10"]) == 0
    ckpt = torch.load(part / "ckpt.pt", weights_only=True)
    gen = np.random.default_rng()
    gen.bit_generator.state = ckpt["rng"][0]["numpy"]
    old = {**ckpt, "config": TrainConfig.from_dict(ckpt["config"]),
           "model": {k: v.numpy() for k, v in ckpt["model"].items()},
           "rng": [{"numpy": gen, "torch": ckpt["rng"][0]["torch"]}]}
    torch.save(old, part / "ckpt.pt")
    capsys.readouterr()
    assert train_cli.main(common + ["--out", str(part), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TrainConfig" in err and "convert_checkpoint" in err, err
    assert convert_main([str(part), "--trust-and-unpickle"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: unpickling" in captured.err and "runs any code" in captured.err
    assert (part / ("ckpt.pt" + BACKUP_SUFFIX)).exists()
    assert convert_main([str(part), "--trust-and-unpickle"]) == 2        # the backup would be overwritten
    assert train_cli.main(common + ["--out", str(part), "--resume"]) == 0
    loss = lambda d: [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "train"]
    assert loss(part) == loss(tmp_path / "full")


def test_convert_leaves_a_safe_checkpoint_alone(run, capsys):
    before = (run / "ckpt.pt").read_bytes()
    assert convert_main([str(run), "--trust-and-unpickle"]) == 0
    assert "nothing to convert" in capsys.readouterr().out
    assert (run / "ckpt.pt").read_bytes() == before and not (run / ("ckpt.pt" + BACKUP_SUFFIX)).exists()


def test_torch_older_than_2_6_is_refused(run, monkeypatch):
    monkeypatch.setattr(torch, "__version__", torch.torch_version.TorchVersion("2.5.1"))
    with pytest.raises(checkpoint.CheckpointError, match=r"needs torch >= 2.6 .*CVE-2025-32434.*2.5.1"):
        checkpoint.load(run / "ckpt.pt")


def test_no_shipped_code_unpickles_but_the_conversion():
    """Every torch.load in the packages and notebooks passes weights_only=True; pickle.load(s) and
    weights_only=False appear only in the explicit conversion command."""
    import ast
    import json as _json
    sources = [(p, p.read_text()) for d in ("algoformer", "constructions", "verify") for p in (ROOT / d).rglob("*.py")]
    sources += [(p, "\n".join("".join(c["source"]) for c in _json.loads(p.read_text())["cells"] if c["cell_type"] == "code"))
                for p in (ROOT / "notebooks").glob("*.ipynb")]
    allowed = ROOT / "algoformer" / "training" / "convert_checkpoint.py"
    loads = 0
    for path, text in sources:
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f"{getattr(f.value, 'id', '')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
                assert path == allowed, (path, node.lineno)
            if name == "torch.load":
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert safe or path == allowed, (path, node.lineno)
    assert loads >= 2                                   # safe_load's and the conversion's


def test_init_from_run_is_checked_against_the_construction(tmp_path, capsys):
    """A run started from a construction (--init-from) is rebuilt through its plug-in; its checkpoint's
    tensors are checked against that model."""
    out = tmp_path / "init"
    args = ["--task", "linear", "--init-from", "newton", "--dim", "3", "--n-points", "8", "--T", "3",
            "--delta-T", "2", "--batch-size", "8", "--threads", "1", "--quiet", "--eval-every", "0",
            "--steps", "1", "--out", str(out)]
    assert train_cli.main(args) == 0
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    ckpt["model"][name] = ckpt["model"][name][:, :-1].clone()
    torch.save(ckpt, out / "ckpt.pt")
    capsys.readouterr()
    assert evaluate_cli.main([str(out), "--out", str(tmp_path / "figs"), "--batch", "4", "--max-loops", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"tensor {name!r} has shape" in err and str(out / "ckpt.pt") in err, err
