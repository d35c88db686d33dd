"""The SUBLEQ looped transformer (constructions/subleq*.py, verify/subleq*.py): the interpreter and the
programs, the text format, exactness at every loop (programs, thousands of random instructions,
random programs), halting, the defects of the printed construction, the derived lam bound, the CLI."""
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from constructions import reference
from constructions.bridge import build_model
from constructions.subleq import build, lambda_bound
from constructions.subleq_layout import Shape, decode, encode, layout
from constructions.subleq_machine import (Program, ProgramError, format_program, parse_program, random_program,
                                          run_reference, step, wrap)
from constructions.subleq_programs import PROGRAMS, expected_result
from verify.cli import main
from verify.subleq_run import run_batch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny loops: with two threads on a loaded 2-core machine each op waits for the
    other thread (measured 30x slower); restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- the interpreter and the programs ---------------------------------------------------------------------
def test_step_is_the_papers_variant():
    p = Program(((0, 1, 0),), (5, 3), 4)            # mem[1] = 3 - 5 = -2 <= 0: jump to c = 0
    mem, pc = step(p, np.array(p.memory), 0)
    assert mem.tolist() == [5, -2] and pc == 0
    p = Program(((1, 0, 0),), (5, -3), 4)           # mem[0] = 5 + 3 = 8 wraps to -8 in 4 bits: jump
    mem, pc = step(p, np.array(p.memory), 0)
    assert mem.tolist() == [-8, -3] and pc == 0
    p = Program(((1, 0, 0),), (-8, 1), 4)           # -8 - 1 wraps to 7 > 0: next instruction (= halt)
    mem, pc = step(p, np.array(p.memory), 0)
    assert mem.tolist() == [7, 1] and pc == 1 == p.halt
    assert wrap(128, 8) == -128 and wrap(-129, 8) == 127


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_programs_compute_what_they_say(name):
    p = PROGRAMS[name]()
    states = run_reference(p, 10_000)
    assert states[-1][1] == p.halt
    ok, what = expected_result(p, states[-1][0])
    assert ok, what


@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 12), st.integers(2, 16))
def test_text_format_round_trip(seed, M, P, B):
    p = random_program(np.random.default_rng(seed), M, P, B)
    assert parse_program(format_program(p)) == Program(p.instructions, p.memory, B, "program")


@pytest.mark.parametrize("text,needle", [
    ("mem 1 2\n0 1 0\n", "no 'bits B'"),
    ("bits 8\nmem 1 2\n0 1\n", "line 3"),
    ("bits 8\nmem 1 x\n0 1 0\n", "line 2"),
    ("bits 8\nmem 1 2\n0 2 0\n", "b=2 is an address outside memory"),
    ("bits 8\nmem 1 2\n0 1 5\n", "c=5 is outside the program"),
    ("bits 8\nmem 1 128\n0 1 0\n", "mem[1]=128 is beyond the encodable range"),
    ("bits 8\nmem 1 2\n", "no instructions"),
    ("bits 1\nmem 0\n0 0 0\n", "bits=1"),
    ("bits 8\ncells 1\nmem 1 2\n0 1 0\n", "cells=1"),
])
def test_malformed_programs_are_named(text, needle):
    with pytest.raises(ProgramError, match=re.escape(needle)):
        parse_program(text)


# -- exactness --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_program_exact_at_every_loop(name, dtype):
    p = PROGRAMS[name]()
    o = run_batch([p], 10.0, dtype)[0]
    assert o.halted and o.exact, o.detail
    assert expected_result(p, o.final_memory)[0]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 16), B=st.integers(2, 16))
def test_random_single_instructions_exact(seed, M, B):
    """500 random instructions on random full-range memories per example, one batched forward."""
    rng = np.random.default_rng(seed)
    progs = [random_program(rng, M, 6, B) for _ in range(500)]
    outs = run_batch(progs, 1.25 * lambda_bound(Shape.of(progs[0])), "float64", max_steps=1, extra_loops=0)
    bad = [o for o in outs if not o.exact]
    assert not bad, bad[0].detail


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 12), P=st.integers(1, 12), B=st.integers(2, 12),
       dtype=st.sampled_from(["float64", "float32"]))
def test_random_programs_exact_and_halted_ones_stay_put(seed, M, P, B, dtype):
    rng = np.random.default_rng(seed)
    progs = [random_program(rng, M, P, B) for _ in range(64)]
    outs = run_batch(progs, 1.25 * lambda_bound(Shape.of(progs[0])), dtype, max_steps=24, extra_loops=3)
    bad = [o for o in outs if not o.exact]
    assert not bad, bad[0].detail


def test_torch_model_equals_the_numpy_reference_of_eq1():
    p = PROGRAMS["multiply"]()
    w = build(Shape.of(p), 10.0)
    _, states = reference.run(w, encode(p)[None], 8)
    model = build_model(w)
    with torch.no_grad():
        h = model.run_pre(torch.tensor(encode(p)[None]))
        for t in range(1, 9):
            h = model.run_loop(h, t)
    np.testing.assert_allclose(h.numpy(), states[-1], atol=1e-9)


# -- the derived temperature bound ---------------------------------------------------------------------------
@pytest.mark.parametrize("B", [4, 8, 16])
def test_exact_at_the_derived_bound_and_not_far_below(B):
    rng = np.random.default_rng(B)
    progs = [random_program(rng, 8, 8, B) for _ in range(64)]
    lam = lambda_bound(Shape.of(progs[0]))
    assert all(o.exact for o in run_batch(progs, lam, "float64", max_steps=16))
    assert not all(o.exact for o in run_batch(progs, lam / 4, "float64", max_steps=16))


# -- the defects of the printed construction ------------------------------------------------------------------
def test_printed_shared_biases_break_the_machine():
    """Defect 1: the code's column-0-only biases become Eq. 1's shared bias; then memory is corrupted."""
    outs = [run_batch([PROGRAMS[n]()], 10.0, "float64", printed=True)[0] for n in ("add", "multiply", "factorial")]
    assert not any(o.exact for o in outs)
    assert all(run_batch([PROGRAMS[n]()], 10.0, "float64")[0].exact for n in ("add", "multiply", "factorial"))


def test_printed_softmax_overflows_where_the_stable_one_is_exact():
    """Defect 3: exp(lam s) / sum exp(lam s) without the max overflows in float32 at lam * w > 88."""
    p = PROGRAMS["add"]()
    lam = 100.0
    w = build(Shape.of(p), lam)
    h = encode(p).astype(np.float32)
    head = w.pre[0].heads[1]                                       # read instruction: scores lam * w = 200
    s = (h @ head.query.T.astype(np.float32)) @ (h @ head.key.T.astype(np.float32)).T
    with np.errstate(over="ignore", invalid="ignore"):
        printed = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    assert np.isnan(printed).any()
    assert run_batch([p], lam, "float32")[0].exact


@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.49))
def test_error_correction_has_a_fixed_width(seed, eps):
    """Defect 2: the code computes its correction width from the state; here one set of weights maps
    every memory entry within 1/2 of +-1 to +-1 (up to one rounding)."""
    p = PROGRAMS["add"]()
    shape = Shape.of(p)
    lay, fetch = layout(shape), build(shape, 10.0).pre[0]
    h = encode(p)
    words = h[shape.memory_tokens, lay["word"]].copy()
    noise = np.random.default_rng(seed).uniform(-eps, eps, words.shape)
    h[shape.memory_tokens, lay["word"]] = words + noise
    out = h + reference.apply_ffn(fetch.ffn, h[None])[0]
    np.testing.assert_allclose(out[shape.memory_tokens, lay["word"]], words, atol=1e-12)


# -- the command line ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,needle", [
    ("bits 8\nmem 1 2\n0 1\n", "line 3"),
    ("bits 8\nmem 1 2\n0 7 0\n", "outside memory"),
    ("bits 4\nmem 1 9\n0 1 0\n", "beyond the encodable range"),
])
def test_cli_bad_program_exits_2_with_one_line(tmp_path, capsys, text, needle):
    f = tmp_path / "p.sq"
    f.write_text(text)
    assert main(["subleq", "--program", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["--program", "fibonacci"], "--program"), (["--lam", "0"], "--lam"), (["--lam", "x"], "--lam"),
    (["--dtype", "float16"], "--dtype"), (["--cells", "0"], "--cells"), (["--json", "/no/such/dir/x.json"], "--json"),
    (["--max-steps", "-1"], "--max-steps"),
])
def test_cli_bad_arguments_exit_2(argv, needle, capsys):
    assert main(["subleq", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_cli_file_program_config_first_and_json(tmp_path, capsys):
    f = tmp_path / "neg.sq"
    f.write_text("# y = -x\nbits 6\nmem 13 4\n1 1 1\n0 1 2\n")
    out = tmp_path / "r.json"
    assert main(["subleq", "--program", str(f), "--dtype", "float32", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("config:") and "dtypes=float32" in lines[0] and "seed=0" in lines[0]
    rows = json.loads(out.read_text())["programs"]
    assert rows[0]["exact"] and rows[0]["steps"] == 2


def test_cli_sweep_reports_smallest_lam_and_largest_memory(capsys):
    argv = ["subleq", "--sweep", "--program", "add", "--dtype", "float64", "--lams", "0.5,8",
            "--cells", "4", "--bits", "4,8", "--trials", "4", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "smallest lam exact on every program: 8" in out
    assert "4 cells: exact up to 8 bits per word (the largest tried)" in out


def test_shape_validation_names_the_field():
    with pytest.raises(ValueError, match="code_bits=2"):
        Shape(8, 8, 8, code_bits=2)
    with pytest.raises(ValueError, match="n_cells"):
        Shape(0, 1, 8)
    with pytest.raises(ValueError, match="lam"):
        build(Shape(2, 2, 4), float("nan"))


def test_decode_reads_back_the_encoding():
    p = random_program(np.random.default_rng(3), 9, 5, 7)
    dec = decode(encode(p)[None], Shape.of(p))
    assert dec.memory[0].tolist() == list(p.memory) and dec.pc[0] == 0 and dec.margin[0] == 1.0


def test_precision_benchmark_runs_at_a_tiny_size():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "subleq_precision.py"), "--cells", "4",
                          "--bits", "2,3", "--trials", "2", "--dtypes", "float64", "--lam-grid", "4:5:1",
                          "--programs", "negate"], capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("config:") and any(l.startswith("float64  negate  ") for l in lines)
    assert any(l.startswith("float64  4  3  ") for l in lines)


def test_cli_views_write_pngs(tmp_path):
    att, lay = tmp_path / "a.png", tmp_path / "l.png"
    assert main(["subleq", "--program", "negate", "--dtype", "float64", "--quiet",
                 "--show-attention", str(att), "--show-layout", str(lay)]) == 0
    for f in (att, lay):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_documented_example_file_runs_exactly():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "subleq.md").read_text()
    block = doc.split("## Program file format", 1)[1].split("```", 2)[1]
    p = parse_program(block, "doc-example")
    assert (p.n_cells, p.n_instructions, p.bits) == (8, 2, 6)
    o = run_batch([p], 10.0, "float64")[0]
    assert o.exact and o.halted and o.final_memory[1] == -13


@pytest.mark.parametrize("name", ["negate", "factorial"])
def test_the_model_s_own_halting_stops_at_the_interpreter_s_halt(name):
    """The halt row drives ``AlgoFormer.forward_halting`` (docs/halting.md): the model stops after as
    many loops as the interpreter runs instructions, and its memory is the interpreter's final memory."""
    from algoformer.halting import Halting
    p = PROGRAMS[name]()
    shape = Shape.of(p)
    states = run_reference(p, 10_000)
    model = build_model(build(shape, 1.25 * lambda_bound(shape)))
    x = torch.tensor(encode(p, shape))[None]
    with torch.no_grad():
        halted = model.forward_halting(x, Halting(rows=(layout(shape).row("halt"),), tokens=(0,)), 10_000)
    assert int(halted.loops[0]) == len(states) - 1
    dec = decode(halted.output.numpy(), shape)
    assert [int(v) for v in dec.memory[0]] == [int(v) for v in states[-1][0]] and dec.halt[0] == 1
