"""The precision matrix: float64, float32, bfloat16 everywhere; tf32 only where CUDA is."""
import json
import math

import pytest
import torch

from verify.cli import main
from verify.emulate import tf32_matmuls
from verify.sweep import PRECISIONS, auto_temps, available, log_max, unit_roundoff

TINY = ["newton", "--N", "8", "--d", "3", "--problems", "4", "--iters", "4"]


def test_unit_roundoffs_are_the_ieee_and_bfloat16_values():
    assert unit_roundoff("float64") == 2.0 ** -53 == unit_roundoff(torch.float64)
    assert unit_roundoff("float32") == 2.0 ** -24 == unit_roundoff(torch.float32)
    assert unit_roundoff("bfloat16") == 2.0 ** -8 == unit_roundoff(torch.bfloat16)
    assert unit_roundoff("tf32") == 2.0 ** -11
    for name in ("float64", "float32", "bfloat16"):    # the table agrees with torch
        assert unit_roundoff(name) == torch.finfo(PRECISIONS[name].storage).eps / 2
    assert log_max("bfloat16") == pytest.approx(log_max("float32"), abs=0.01)   # float32's range
    assert log_max("tf32") == log_max("float32") and log_max("float64") > 709


def test_automatic_temperature_uses_each_dtype_s_roundoff():
    # a coarser u moves the optimum to larger theta (bigger c): float64 < float32 < tf32 < bfloat16
    c = [auto_temps("odd+mirror", 18, {"loop": 1.0}, d)["loop"].c for d in ("float64", "float32", "tf32", "bfloat16")]
    assert c == sorted(c) and c[0] < c[-1]


def test_tf32_switch_is_restored():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32_matmuls(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == old


def test_bfloat16_runs_end_to_end_and_is_worse_than_float32(tmp_path, capsys):
    path = tmp_path / "out.json"
    code = main([*TINY, "--dtype", "float32,bfloat16", "--device", "cpu", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "bfloat16" in out and "verdict:" in out
    rows = json.loads(path.read_text())["rows"]
    assert {r["status"] for r in rows} <= {"ok", "lost", "overflow", "diverged"}
    best = {d: min(r["error_prediction"] for r in rows if r["dtype"] == d and r["error_prediction"] is not None)
            for d in ("float32", "bfloat16")}
    assert math.isfinite(best["bfloat16"]) and best["bfloat16"] > best["float32"]
    assert any(line.startswith("  bfloat16 odd+mirror:") for line in out.splitlines())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("value", ["tf32", "float32,tf32"])
def test_tf32_without_cuda_exits_2_with_one_line(value, capsys):
    assert not available("tf32", "cpu")
    assert main([*TINY, "--dtype", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m verify: error: argument --dtype:")
    assert "tf32" in err and "cuda" in err and "float32" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_dtype_all_on_cpu_skips_tf32_with_a_note(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main([*TINY[:-1], "2", "--dtype", "all", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: --dtype all skips tf32" in out
    doc = json.loads(path.read_text())
    assert doc["config"]["dtypes"] == ["float64", "float32", "bfloat16"]
    assert [r["dtype"] for r in doc["rows"]] == sorted((r["dtype"] for r in doc["rows"]),
                                                       key=["float64", "float32", "bfloat16"].index)
    assert {r["dtype"] for r in doc["rows"]} == {"float64", "float32", "bfloat16"}


@pytest.mark.parametrize("value", ["float16", "bf16", "", "float32,", "tf32,nope"])
def test_unknown_dtype_names_exit_2(value, capsys):
    assert main([*TINY, "--dtype", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dtype" in err and "bfloat16" in err
