"""``python -m verify`` on first contact (issue 13): every bad input exits 2 with one line before any
work and writes nothing; outputs are strict JSON and honest tables, verdicts, plots and progress."""
import contextlib
import io
import json
import math
import os
import re

import numpy as np
import pytest

from verify.cli import build_parser, main
from verify.emulate import relative_error
from verify.report import best_row, format_table, verdict_lines, wrap
from verify.sweep import Row

TINY = ["--N", "4", "--d", "2", "--problems", "2", "--iters", "1", "--dtype", "float64"]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def refused(argv, needle, folder=None):
    """exit 2, one line on stderr naming ``needle``, nothing on stdout (no work began), no file made."""
    before = sorted(os.listdir(folder)) if folder else None
    code, out, err = run(argv)
    assert code == 2, (argv, out, err)
    assert err.count("\n") == 1 and err.startswith("python -m verify: error:") and "Traceback" not in err
    assert needle in err and out == ""
    if folder:
        assert sorted(os.listdir(folder)) == before
    return err


@pytest.mark.parametrize("N, d", [(3, 5), (4, 5), (1, 2)])
def test_newton_needs_N_at_least_d(N, d):
    """S = X^T X is d x d of rank <= N: below N = d there is no S^-1 (was a LinAlgError, or a silent run)."""
    err = refused(["newton", "--N", str(N), "--d", str(d), "--problems", "2", "--iters", "1"], "--N")
    assert f"N={N} < d={d}" in err


def test_a_run_too_big_for_memory_is_refused_before_any_work():
    refused(["decoder-gd", "--problems", "100000", "--N", "10000", "--d", "1000"], "--problems")


@pytest.mark.parametrize("flag, path, needle", [
    ("--json", "", "expected a file path"), ("--plot", "", "expected a file path"),
    ("--json", "{tmp}", "is a folder"), ("--plot", "{tmp}/adir", "is a folder"),
    ("--show-layout", "{tmp}/adir/", "is a folder"),
    ("--json", "{tmp}/missing/out.json", "does not exist"),
    ("--plot", "{tmp}/out", "ending in .png"), ("--show-attention", "{tmp}/out.jpeg", "ending in .png"),
    ("--json", "{tmp}/old.json", "pass --force"), ("--plot", "{tmp}/old.png", "pass --force"),
])
def test_bad_output_paths_exit_2_before_any_work_and_write_nothing(tmp_path, flag, path, needle):
    (tmp_path / "adir").mkdir()
    (tmp_path / "old.json").write_text("keep me")
    (tmp_path / "old.png").write_bytes(b"keep me")
    refused(["gd", *TINY, flag, path.format(tmp=tmp_path)], needle, tmp_path)
    assert (tmp_path / "old.json").read_text() == "keep me" and (tmp_path / "old.png").read_bytes() == b"keep me"


def test_two_outputs_on_one_path_and_an_unwritable_folder_are_refused(tmp_path):
    p = str(tmp_path / "a.png")
    refused(["gd", *TINY, "--plot", p, "--show-attention", p], "--show-attention", tmp_path)
    if os.geteuid() == 0:        # root writes through file modes: use a folder no one can write to
        refused(["gd", *TINY, "--json", "/proc/verify-out.json"], "cannot write")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        refused(["gd", *TINY, "--json", str(ro / "out.json")], "cannot write", ro)


def test_force_overwrites_and_the_outputs_are_whole_and_strict(tmp_path):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    js.write_text("old")
    code, out, err = run(["gd", *TINY, "--dtype", "float64,float32", "--json", str(js), "--plot", str(png),
                          "--force", "--quiet"])
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"

    def no_constants(c):
        raise AssertionError(f"bare {c} in the JSON")
    doc = json.loads(js.read_text(), parse_constant=no_constants)      # NaN / Infinity would raise
    assert set(doc) == {"config", "rows", "verdict", "notes"}
    over = [r for r in doc["rows"] if r["status"] == "overflow"]
    assert over and all(r["error_prediction"] is None for r in over)
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.png"]           # no temporary file left


def test_relative_error_is_scale_invariant_down_to_subnormal_scales():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 5))
    emu = ref * (1 + 1e-9 * rng.standard_normal((3, 5)))
    base = relative_error(emu, ref)
    for scale in (1e-200, 1e-300, 1e200):
        assert np.allclose(relative_error(emu * scale, ref * scale), base, rtol=1e-6)
    assert relative_error(np.zeros((1, 2)), np.zeros((1, 2)))[0] == 0
    assert relative_error(np.ones((1, 2)), np.zeros((1, 2)))[0] == math.inf
    assert relative_error(np.array([[np.nan, 1.0]]), np.ones((1, 2)))[0] == math.inf


def test_a_tiny_step_is_not_reported_as_an_exact_match(tmp_path):
    """eta = 1e-200: the predictions ~1e-200 once squared to 0 in the norms, and printed 0.00e+00 as ok."""
    js = tmp_path / "t.json"
    assert run(["gd", *TINY, "--eta", "1e-200", "--json", str(js), "--quiet"])[0] == 0
    ok = [r for r in json.loads(js.read_text())["rows"] if r["status"] == "ok"]
    assert ok and all(r["error_prediction"] > 0 for r in ok)


def test_variant_list_runs_each_variant_once(tmp_path):
    js = tmp_path / "v.json"
    assert run(["gd", *TINY, "--variant", "odd,odd", "--json", str(js), "--quiet"])[0] == 0
    doc = json.loads(js.read_text())
    assert doc["config"]["variants"] == ["odd"] and sum(r["auto"] for r in doc["rows"]) == 1


def test_abbreviations_are_refused_and_seed_has_help():
    refused(["gd", "--q", "3"], "unrecognized arguments")
    refused(["newton", "--it", "3"], "unrecognized arguments")
    sub = build_parser()._subparsers._group_actions[0].choices
    for name, p in sub.items():
        for a in p._actions:
            if a.option_strings and a.help != "==SUPPRESS==" and a.dest not in ("help",):
                assert a.help, (name, a.dest)
        seed = [a for a in p._actions if a.dest == "seed"]
        assert not seed or "default 0" in seed[0].help


def _row(dtype="float64", variant="odd", theta=1e-2, err=1e-6, status="ok", auto=False, algorithm="gd"):
    return Row(algorithm, variant, dtype, "cpu", theta, 3.0, theta, err, err, err, err, 1.0, 1e-3, status, auto)


def test_table_columns_align_for_every_dtype_name_and_best_agrees_with_the_verdict():
    rows = [_row("float64", theta=1e-1, err=1e-3), _row("float64", theta=1e-2, err=1e-7),
            _row("float64", theta=1e-3, err=1e-5), _row("float64", theta=3e-3, err=1e-9, auto=True),
            _row("float32+attn64", "richardson10+mirror", 1e-1, 2e-4),
            _row("float32+attn64", "richardson10+mirror", 1e-2, 0.9, "lost"),
            _row("bfloat16+attn32", "odd", 1e-48, math.nan, "overflow")]
    table = format_table(rows).splitlines()
    at = table[0].index("status")
    assert all(line[at - 2:at] == "  " and line[at:at + 2].strip() for line in table[2:])
    best = [line for line in table if "<best" in line]
    assert len(best) == 2 and "1.00e-07" in best[0] and "*auto" not in best[0]   # not the auto row
    assert best_row(rows[:4]) is rows[1]
    verdict = verdict_lines(rows, 10)
    assert "1.00e-07" in verdict[0] and "2.00e-04" in verdict[1]


def test_every_verdict_is_a_sentence_of_at_most_two_lines():
    rows = [_row("float64", "richardson12+mirror", t, e) for t, e in
            [(1e-1, 1e-3), (1e-2, 1e-7), (1e-3, 1e-9), (1e-4, 1e-6), (1e-5, 1e-4)]]
    rows += [_row("bfloat16+attn32", "richardson12+mirror", t, 0.9, "lost") for t in (1e-1, 1e-2)]
    rows += [_row("float32+attn64", "paper", 1e-3, math.nan, "diverged")]
    floors = {"float64": {"prediction_max": 2.6e-13}, "bfloat16": {"prediction_max": 1e-2}}
    verdict = verdict_lines(rows, 82, floors)
    assert len(verdict) == 3
    for line in verdict:
        text = wrap(line)
        assert text.count("\n") <= 1 and max(map(len, text.splitlines())) <= 100, text
        assert line.endswith(".") and not re.search(r"error a floor", line)


def test_quiet_prints_the_configuration_line_and_the_verdict_only():
    code, out, err = run(["gd", *TINY, "--quiet"])
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].startswith("configuration:") and lines[1] == "verdict:"
    assert all(line.startswith("  ") for line in lines[2:])


def test_the_configuration_comes_first_and_progress_goes_to_stderr():
    code, out, err = run(["gd", *TINY])
    assert code == 0 and out.startswith("configuration:") and "notes:" in out
    progress = [line for line in err.splitlines() if line.startswith("sweep:")]
    assert progress == err.splitlines() and progress[-1].startswith("sweep: 100%") and len(progress) <= 11
    pct = [int(re.match(r"sweep:\s+(\d+)%", line).group(1)) for line in progress]
    assert pct == sorted(pct)


def test_on_a_terminal_the_progress_is_a_tqdm_bar():
    from verify import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    term = Terminal()
    with progress.session("sweep", stream=term):
        progress.plan(2, 5)
        for _ in range(3):
            progress.row("float64 odd")
        progress.group_done()
    assert "\r" in term.getvalue() and "sweep" in term.getvalue()


def test_plot_marks_lost_diverged_overflow_and_zero_rows_and_draws_the_floor(tmp_path):
    from verify.plot import write_plot
    rows = [_row(theta=1e-1, err=1e-3), _row(theta=1e-2, err=0.0), _row(theta=1e-3, err=0.8, status="lost"),
            _row(theta=1e-4, err=math.nan, status="diverged"), _row(theta=1e-160, err=math.nan, status="overflow"),
            _row("float32", "sinh4", 1e-2, 1e-5)]
    labels = write_plot(str(tmp_path / "p.svg"), rows, "t", {"arithmetic_floor": {"float32": {"prediction_max": 2e-6}}})
    text = " | ".join(labels)
    for needle in ("odd", "sinh4", "line: float64", "line: float32", "exactly 0", "lost", "overflow or diverged",
                   "far beyond", "numpy itself in float32"):
        assert needle in text, (needle, text)
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


# -- copy (Lemma A.3) -------------------------------------------------------------------------------
COPY = ["copy", "--N", "5", "--d", "1", "--q", "2", "--problems", "1"]


@pytest.mark.parametrize("flag, value", [("--iters", "3"), ("--variant", "odd"), ("--register-bound", "1e3"),
                                         ("--iters", None)])
def test_copy_refuses_the_options_it_does_not_read(flag, value):
    refused(COPY + [flag] + ([value] if value else []), flag)


def test_copy_views_need_one_beta():
    refused(COPY + ["--show-attention", "x.png"], "--beta")


def test_copy_status_order_lost_over_bound_unzeroed():
    from verify.algorithms_representation import copy_status
    z = np.zeros(1)
    assert copy_status(np.array([0.9]), np.array([0.9]), z, bound=5.0, n=6, u=1e-16) == "lost"   # bound allows it
    assert copy_status(np.array([0.2]), np.array([0.2]), z, bound=0.1, n=6, u=1e-16) == "over-bound"
    assert copy_status(np.array([0.0]), np.array([0.0]), np.array([1e-30]), bound=0.1, n=6, u=1e-16) == "unzeroed"
    assert copy_status(np.array([np.nan]), z, z, bound=0.1, n=6, u=1e-16) == "diverged"
    assert copy_status(z, z, z, bound=0.0, n=6, u=1e-16) == "ok"


def test_copy_underflow_threshold_is_the_softmax_dtype_s():
    """exp(-z) rounds to 0 past -ln(half the smallest subnormal): 2^-1075, 2^-150, 2^-134."""
    from verify.algorithms_representation import exp_underflow
    ln2 = math.log(2)
    assert exp_underflow("float64") == pytest.approx(1075 * ln2)
    assert exp_underflow("float32") == pytest.approx(150 * ln2) == exp_underflow("bfloat16+attn32")
    assert exp_underflow("bfloat16") == pytest.approx(134 * ln2)
    assert exp_underflow("float32+attn64") == exp_underflow("float64")


def test_copy_table_speaks_beta_and_big_betas_stay_short():
    code, out, _ = run(COPY + ["--beta", "1e308", "--dtype", "float64,bfloat16"])
    assert code == 0
    table = out[out.index("dtype "):out.index("verdict:")].splitlines()
    assert "beta" in table[0] and "theta" not in table[0]
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith(("configuration", "from the")))
    code, out, _ = run(COPY + ["--dtype", "bfloat16"])
    assert code == 0 and "92.9" in out and "745" not in out


def test_copy_plot_is_drawn_against_beta_with_its_bound(tmp_path):
    import matplotlib
    from verify.plot import write_plot
    rows = [_row("float64", "copy", 1 / b, e, s, algorithm="copy") for b, e, s in
            [(0.5, 0.9, "lost"), (8.0, 1e-4, "ok"), (64.0, 0.0, "ok")]]
    with matplotlib.rc_context({"svg.fonttype": "none"}):          # text stays text in the SVG
        labels = write_plot(str(tmp_path / "c.svg"), rows, "copy", {})
    svg = (tmp_path / "c.svg").read_text()
    assert "beta" in svg and "theta" not in svg and "1/theta" not in svg
    assert any(label.startswith("bound 2(n-1)") for label in labels) and any("exactly 0" in x for x in labels)


def test_progress_counts_groups_that_run_at_once_apart():
    """Two threads each run a group of 3 rows at once (``verify.sweep`` runs two groups side by side):
    the count never passes what has been done, and both groups' ends reach 100%."""
    import io
    import threading

    from verify import progress
    out = io.StringIO()
    with progress.session("sweep", True, out) as p:
        progress.plan(2, 4)
        barrier = threading.Barrier(2)

        def group():
            barrier.wait()
            for _ in range(3):
                progress.row("r")
            progress.group_done()
        threads = [threading.Thread(target=group) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert p.count == 8 and p.in_groups == {}
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("sweep: 100% (8/8 rows at most")


def test_ctrl_c_stops_a_sweep_whose_groups_run_side_by_side():
    """SIGINT during a long sweep (two groups at once on the shared chunk pool): exit 130 with the one
    line, and the other group stops before its next row instead of running the sweep to its end."""
    import os
    import signal
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "verify", "gd", "--iters", "20", "--variant", "all", "--dtype", "both"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = p.stderr.readline()                 # the first progress line: the rows are running
    assert first.startswith("sweep:"), first
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("python -m verify: interrupted (each output file is written whole "
                                            "or not at all)")
    assert "100%" not in err                    # the sweep did not run on to its end
    assert "dtype   variant" not in out         # and printed no table
