"""``python -m verify``: bad arguments exit 2 with one line; a run prints config, table, verdict, JSON."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from verify.cli import main

BAD = {
    "--iters": ["-1", "x", "2.5", "10001"],
    "--N": ["0", "-5", "ten", "10001"],
    "--d": ["0", "1.5"],
    "--problems": ["0", "abc"],
    "--seed": ["-1", "1e3"],
    "--dtype": ["float16", "bf16", ""],
    "--device": ["tpu", "gpu"],
    "--variant": ["best", "odd,nope", ""],
    "--x-bound": ["0", "-1", "inf", "nan", "big"],
}


@given(algo=st.sampled_from(["gd", "newton"]), flag=st.sampled_from(sorted(BAD)), data=st.data(),
       prefix=st.lists(st.sampled_from(["--quiet", "--dtype=float64", "--N=5", "--iters=2"]), max_size=3))
def test_bad_argument_exits_2_with_one_line(algo, flag, data, prefix):
    value = data.draw(st.sampled_from(BAD[flag]))
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = main([algo, *prefix, flag, value])
    err = buf.getvalue()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("python -m verify: error:") and "Traceback" not in err
    assert flag in err


@pytest.mark.parametrize("argv,needle", [
    ([], "ALGORITHM"), (["bisection"], "invalid choice"), (["newton", "--frobnicate"], "unrecognized"),
    (["gd", "--alpha", "0.1"], "unrecognized"), (["newton", "--alpha", "-1"], "--alpha"),
    (["cot", "--variant", "sinh4"], "mirrored values"), (["representation", "--variant", "odd,sinh8"], "sinh8"),
])
def test_other_bad_invocations(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_cuda_request_without_cuda_is_a_clean_error(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["newton", "--device", "cuda"]) == 2
    assert "--device" in capsys.readouterr().err


def test_help_lists_the_algorithms():
    out = subprocess.run([sys.executable, "-m", "verify", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "gd" in out.stdout and "newton" in out.stdout


def test_small_run_prints_configuration_table_verdict_and_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    code = main(["newton", "--N", "8", "--d", "3", "--problems", "4", "--iters", "4", "--dtype", "both",
                 "--variant", "paper,odd", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "configuration:" in out and "dtype" in out and "seed=0" in out and "device=cpu" in out
    assert "verdict:" in out and "floor" in out
    doc = json.loads(path.read_text())
    assert doc["config"]["N"] == 8 and doc["config"]["algorithm"] == "newton"
    keys = {"algorithm", "variant", "dtype", "device", "C", "c", "error_iterate", "error_prediction"}
    assert doc["rows"] and all(keys <= set(r) for r in doc["rows"])
    assert {r["variant"] for r in doc["rows"]} == {"paper", "odd"}
    assert {r["dtype"] for r in doc["rows"]} == {"float32", "float64"}
    assert any(r["status"] == "overflow" for r in doc["rows"] if r["dtype"] == "float32")
    assert sum(r["auto"] for r in doc["rows"]) == 4


@pytest.mark.parametrize("flag, value, needles", [
    ("--x-bound", "0.01", ["outside the construction's assumptions", "x_bound"]),
    ("--register-bound", "1e-6", ["outside the construction's assumptions", "register_bound=1e-06",
                                  "a register exceeds"]),
])
def test_violating_problems_are_reported_not_run(flag, value, needles, capsys):
    code = main(["gd", "--N", "6", "--d", "2", "--problems", "3", "--iters", "2", "--dtype", "float64", flag, value])
    out = capsys.readouterr().out
    assert code == 1
    assert all(n in out for n in needles)


@pytest.mark.parametrize("module", ["verify.algorithms_decoder", "verify.algorithms_representation",
                                    "verify.bounds", "verify.sweep", "verify.algorithms"])
def test_every_verify_module_imports_first_and_registers_every_algorithm(module):
    """A circular import once made ``import verify.algorithms_decoder`` (imported first) fail."""
    import subprocess
    import sys
    code = f"import {module}; from verify.algorithms import ALGORITHMS; print(sorted(ALGORITHMS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(["gd", "newton", "copy", "representation", "ar", "decoder-gd", "cot"]))


def test_variant_all_runs_only_the_variants_an_algorithm_supports(tmp_path, capsys):
    """`--variant all` on decoder-gd skips the sinh variants (which it refuses by name) and runs the rest."""
    import json
    from constructions.linearise import VARIANTS, odd_values
    path = tmp_path / "out.json"
    assert main(["decoder-gd", "--variant", "all", "--iters", "2", "--N", "4", "--d", "2", "--problems", "2",
                 "--dtype", "float64", "--quiet", "--json", str(path)]) == 0
    ran = {r["variant"] for r in json.loads(path.read_text())["rows"]}
    assert ran == {v for v in VARIANTS if not odd_values(v)}


# -- random argument lists: whatever the list, no traceback -------------------------------------------
POOL = {   # values valid and invalid; valid sizes stay tiny so that a run that goes through is cheap
    "--iters": ["0", "1", "2", "-1", "x", ""], "--N": ["1", "2", "3", "5", "0", "10001"], "--d": ["1", "2", "3", "9"],
    "--problems": ["1", "2", "0"], "--seed": ["0", "7", "-1", "4294967296"],
    "--dtype": ["float64", "float32", "bfloat16", "float32+attn64", "bfloat16+attn32", "tf32", "float16", "",
                "float64,float64"],
    "--device": ["cpu", "cuda", "tpu"], "--variant": ["odd", "paper,odd,odd", "sinh4", "odd+mirror", "nope", ""],
    "--x-bound": ["1e-3", "100", "1e300", "0", "nan"], "--register-bound": ["1e-6", "1e8", "1e300", "-2"],
    "--q": ["1", "2", "5", "0"], "--eta": ["1e-200", "0.5", "1e308", "-1"], "--alpha": ["1e-300", "1e-4", "inf"],
    "--beta": ["1e-300", "20", "1e308", "0"], "--json": ["{tmp}/a.json", "", "{tmp}", "{tmp}/no/a.json"],
    "--plot": ["{tmp}/p.png", "{tmp}/p", ""], "--show-layout": ["{tmp}/l.png", "{tmp}/p.png"], "--show-attention": ["{tmp}/s.svg", "{tmp}/s.txt"],
    "--quiet": None, "--force": None, "--frobnicate": None, "--it": ["2"],
}
SMALL = ["--N", "3", "--d", "2", "--problems", "1", "--iters", "1", "--dtype", "float64"]


@settings(max_examples=int(os.environ.get("VERIFY_FUZZ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algo=st.sampled_from(["gd", "newton", "copy", "representation", "ar", "decoder-gd", "cot", "symbolic"]),
       picks=st.lists(st.tuples(st.sampled_from(sorted(POOL)), st.integers(0, 8)), max_size=5),
       positional=st.sampled_from([[], ["A.9"], ["x"]]))
def test_no_argument_list_gives_a_traceback(tmp_path, algo, picks, positional):
    """(VERIFY_FUZZ_EXAMPLES=500 for a longer hunt.) symbolic gets no lemma that would run a proof."""
    argv = [algo, *positional] + ([] if algo == "symbolic" else SMALL)
    for flag, k in picks:
        values = POOL[flag]
        argv += [flag] if values is None else [flag, values[k % len(values)].format(tmp=tmp_path)]
    before = sorted(os.listdir(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)                       # any exception escaping main fails the test
    assert code in (0, 1, 2), argv
    assert "Traceback" not in err.getvalue() + out.getvalue()
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m verify: error:"), (argv, lines)
        assert sorted(os.listdir(tmp_path)) == before, argv      # nothing written
    if os.path.exists(tmp_path / "a.json") and code != 2:
        json.loads((tmp_path / "a.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
