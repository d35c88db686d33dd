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


# -- the attention in a wider dtype (LayerConfig.attention_dtype; the "+attn" precisions) --------
def _attention(dtype, attention_dtype=None, seed=0):
    from algoformer import LayerConfig
    from algoformer.layer import Attention
    torch.manual_seed(seed)
    cfg = LayerConfig(d_model=8, n_heads=2, d_head=4, d_ff=0, attention_dtype=attention_dtype)
    return Attention(cfg).to(dtype)


def test_attention_dtype_names_the_field_and_the_allowed_values():
    from algoformer import LayerConfig
    with pytest.raises(ValueError, match=r"attention_dtype='float16' is invalid: expected one of None, 'float32'"):
        LayerConfig(d_model=8, n_heads=2, d_head=4, d_ff=0, attention_dtype="float16")


def test_upcast_attention_is_the_wider_computation_rounded_once():
    # float32 parameters and inputs are exact in float64: the float32 layer with a float64 attention
    # must return, bit for bit, the float64 layer's output rounded to float32
    a32, a64 = _attention(torch.float32, "float64"), _attention(torch.float64)
    a64.load_state_dict({k: v.double() for k, v in a32.state_dict().items()})
    h = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = a32(h)
        assert out.dtype == torch.float32
        assert torch.equal(out, a64(h.double()).float())
        assert not torch.equal(out, _attention(torch.float32)(h))   # the plain float32 path rounds more


def test_a_narrower_attention_dtype_changes_nothing():
    h = torch.randn(2, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(_attention(torch.float64, "float32")(h), _attention(torch.float64)(h))


def test_upcast_attention_escapes_autocast():
    h = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
    up, plain = _attention(torch.float32, "float32"), _attention(torch.float32)
    with torch.no_grad():
        exact = plain(h)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(up(h), exact)                   # float32 throughout, autocast or not
            assert not torch.equal(plain(h).float(), exact)    # autocast rounds the plain path to bf16


def test_attn_precisions_store_in_the_narrow_dtype_and_attend_in_the_wide_one():
    from verify.sweep import attention_roundoff, storage_name
    assert PRECISIONS["float32+attn64"].storage == torch.float32 and unit_roundoff("float32+attn64") == 2.0 ** -24
    assert attention_roundoff("float32+attn64") == 2.0 ** -53 and attention_roundoff("float32") == 2.0 ** -24
    assert attention_roundoff("bfloat16+attn32") == 2.0 ** -24 and storage_name("bfloat16+attn32") == "bfloat16"


def test_float32_floor_is_the_softmax_s_u_over_theta_and_goes_with_a_float64_attention():
    """Below the truncation regime (sinh12: theta^12), the float32 emulation's error is the softmax's
    rounding, ~u/theta (the heads' O(theta) signal is held in exp(c a) - 1 to absolute precision u):
    100x from theta = 1e-2 to 1e-4. With the attention in float64 that term is u64/theta <= 1e-12, and
    what is left, the float32 stream's rounding, does not depend on theta."""
    import numpy as np

    from verify.algorithms import ALGORITHMS, Options
    from verify.sweep import _row, schedule_temps
    algo, opts = ALGORITHMS["gd"], Options(N=10, d=5, problems=8)
    p = algo.draw(np.random.default_rng(0), opts)
    eta = algo.choose_step(p)
    ref, scores = algo.reference(p, 6, eta), algo.score_bounds(p, eta)
    err = {(d, th): _row(algo, opts, p, ref, eta, schedule_temps(th, "sinh12", 22, scores), "sinh12", d, "cpu",
                         6, th, False).error_iterate
           for d in ("float32", "float32+attn64") for th in (1e-2, 1e-4)}
    assert err["float32", 1e-4] > 20 * err["float32", 1e-2]
    assert err["float32+attn64", 1e-4] < 3 * err["float32+attn64", 1e-2]
    assert err["float32+attn64", 1e-2] < err["float32", 1e-2] / 10


def test_attn_dtype_runs_through_the_cli_for_every_sweep(capsys):
    for args in (TINY, ["copy", "--N", "6", "--d", "2", "--problems", "2"]):
        assert main([*args, "--dtype", "float32+attn64", "--quiet"]) == 0
        assert "float32+attn64" in capsys.readouterr().out
