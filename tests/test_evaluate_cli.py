"""``python -m algoformer.evaluate`` on careless input: bad arguments exit 2 with one line and write
nothing; the configuration line comes first, then progress on stderr; eval.json is strict JSON; Fig. 3
has integer loop ticks, a labelled T marker and names the runs it leaves out."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from algoformer import evaluate as ev
from algoformer import train as train_cli
from algoformer.training.config import MAX_LOOPS
from algoformer.training.figures import loops_figure

TINY = ["--task", "linear", "--dim", "3", "--n-points", "5", "--width", "16", "--heads", "2", "--T", "3",
        "--delta-T", "2", "--batch-size", "8", "--curriculum", "false", "--threads", "1", "--quiet",
        "--eval-every", "0", "--attention", "exact", "--steps", "2"]


def _strict(text: str):
    def bad(c):
        raise ValueError(f"{c} is not JSON")
    return json.loads(text, parse_constant=bad)


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ev.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/algo (looped, T = 3) and runs/std (the standard transformer, no loop)."""
    root = tmp_path_factory.mktemp("runs")
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_cli.main(TINY + ["--out", str(root / "algo")]) == 0
        assert train_cli.main(TINY + ["--model", "standard", "--layers", "1", "--out", str(root / "std")]) == 0
    return root


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


BAD = [
    (["--device", "cuda"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--seed", "-1"], "--seed=-1"),
    (["--seed", str(2**64)], "--seed"),
    (["--max-loops", "1000000"], f"[1, {MAX_LOOPS}]"),
    (["--max-loops", "0"], "--max-loops"),
    (["--batch", "100000000"], "--batch"),
    (["--batch", "0"], "--batch"),
    (["--attention", "foo"], "unrecognized arguments"),
    (["--max-l", "3"], "unrecognized arguments"),            # abbreviations are off
    (["--out", ""], "--out=''"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_bad_argument_exits_2_with_one_line_and_writes_nothing(args, needle, runs, tmp_path, monkeypatch):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.chdir(tmp_path)
    before = _files(runs)
    code, stdout, err = _main([str(runs / "algo"), "--batch", "8", "--max-loops", "4"] + args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("algoformer.evaluate: error: "), err
    assert needle in err and "Traceback" not in err and stdout == ""
    assert _files(runs) == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind, needle", [("file", "existing file"), ("under_a_file", "is a file"),
                                          ("missing_run", "no such folder"), ("run_is_file", "is a file"),
                                          ("twice", "given twice"), ("torn", "is not a checkpoint")])
def test_bad_paths_are_refused_before_any_work(kind, needle, runs, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "ckpt.pt").write_bytes(b"not a checkpoint")
    run = str(runs / "algo")
    argv = {"file": [run, "--out", str(a_file)], "under_a_file": [run, "--out", str(a_file / "ev")],
            "missing_run": [run, str(tmp_path / "nope"), "--out", str(tmp_path / "ev")],
            "run_is_file": [str(a_file), "--out", str(tmp_path / "ev")],
            "twice": [run, run, "--out", str(tmp_path / "ev")], "torn": [str(torn), "--out", str(tmp_path / "ev")]}
    code, _, err = _main(argv[kind] + ["--batch", "8", "--max-loops", "4"])
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "ev").exists() and a_file.read_text() == "x"


def test_config_line_first_then_progress_then_figures(runs, tmp_path):
    """Not a terminal (captured): a plain progress line each 10%, at most 10 of them, on stderr."""
    code, stdout, err = _main([str(runs / "algo"), str(runs / "std"), "--out", str(tmp_path / "ev"), "--batch", "8",
                               "--max-loops", "40"])
    assert code == 0
    first = stdout.splitlines()[0]
    assert first.startswith("algoformer.evaluate: task=linear d=3 N=5 runs=algo, std batch=8 max_loops=40 seed=")
    progress = err.splitlines()
    assert 5 <= len(progress) <= 10 and all(line.startswith("algoformer.evaluate: ") and "% done" in line
                                            for line in progress), progress
    pct = [int(line.split()[1].rstrip("%")) for line in progress]
    assert pct == sorted(pct) and pct[-1] == 100
    result = _strict((tmp_path / "ev" / "eval.json").read_text())
    assert result["not_drawn"]["fig3_loops.png"] == ["fig3_loops.png: run 'std' not drawn: the standard "
                                                     "transformer has no loop"]
    assert "fig3_loops.png: run 'std' not drawn" in stdout
    assert len(result["per_loop"]["algo"]) == 41 and "std" not in result["per_loop"]


def test_fig3_has_integer_ticks_a_labelled_T_and_names_what_it_leaves_out():
    result = {"task": "linear", "per_loop": {"a": [1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.09]},
              "per_loop_reference": {}, "trained_T": {"a": 3, "s": 0}}
    fig = loops_figure(result, ["a", "s"])
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = ax.get_legend_handles_labels()[1]
    assert "T=3 (loops in training)" in labels and "a (trained T=3)" in labels
    assert any(line.get_xdata()[0] == 3 for line in ax.get_lines() if line.get_linestyle() == ":")
    assert [t.get_text() for t in fig.texts] == ["not drawn (no loop: s)"]
    assert any(t.get_text() == "T=3" for t in ax.texts)


def test_nan_curves_are_null_in_eval_json(runs, tmp_path):
    """A run whose outputs are NaN (finite weights so large that the forward overflows; a checkpoint
    with non-finite weights is refused at load): eval.json stays JSON, its errors are null."""
    bad = tmp_path / "bad"
    bad.mkdir()
    ckpt = torch.load(runs / "algo" / "ckpt.pt", weights_only=True)
    ckpt["model"] = {k: torch.full_like(v, 1e30) for k, v in ckpt["model"].items()}
    torch.save(ckpt, bad / "ckpt.pt")
    code, _, _ = _main([str(bad), "--out", str(tmp_path / "ev"), "--batch", "8", "--max-loops", "3", "--quiet"])
    assert code == 0
    result = _strict((tmp_path / "ev" / "eval.json").read_text())
    assert result["per_sample"]["bad"][1] is None and result["per_loop"]["bad"] == [None] * 4
    assert result["per_sample"]["least squares"][-1] < 1e-6
    for fig in ("fig2_samples.png", "fig3_loops.png", "fig5_baselines.png"):
        assert result["not_drawn"][fig] == [f"{fig}: run 'bad' not drawn: its errors are not finite (NaN or inf: "
                                            "the model diverged)"]
        assert fig in result["figures"]         # drawn, with the baselines, and the note below the axes


def test_runs_sharing_a_folder_name_keep_apart(runs, tmp_path):
    other = tmp_path / "copy" / "algo"
    other.parent.mkdir()
    other.symlink_to(runs / "algo", target_is_directory=True)
    code, _, _ = _main([str(runs / "algo"), str(other), "--out", str(tmp_path / "ev"), "--batch", "8",
                        "--max-loops", "2", "--quiet"])
    assert code == 0
    names = set(_strict((tmp_path / "ev" / "eval.json").read_text())["per_loop"])
    assert names == {str(runs / "algo"), str(other)}


def test_help_shows_defaults_and_abbreviations_are_off():
    parser = ev.build_parser()
    assert parser.allow_abbrev is False
    for action in parser._actions:
        if action.dest not in ("help", "runs"):
            assert "(default: " in parser._get_formatter()._expand_help(action), action.dest


# -- random argument lists -----------------------------------------------------------------------------
FRAGMENTS = [["--batch", "8"], ["--batch", "0"], ["--batch", "x"], ["--batch", "100000000"], ["--max-loops", "3"],
             ["--max-loops", "1000000"], ["--max-loops", "-2"], ["--seed", "-1"], ["--seed", "5"],
             ["--device", "cuda"], ["--device", "cpu"], ["--device", ""], ["--out", ""], ["--quiet"],
             ["--attention", "foo"], ["--max-l", "3"], ["--bogus"], ["--batch"], ["/nonexistent/run"]]
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6).filter(
    lambda s: not s.startswith("-h") and s != "--help")
_OUT = Path(tempfile.mkdtemp(prefix="evaluate-cli-")) / "never"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.lists(TEXT, min_size=1, max_size=2)), max_size=4))
def test_random_argument_lists_never_raise(parts, runs):
    argv = [str(runs / "algo")] + [a for p in parts for a in p] + ["--out", str(_OUT), "--dry-run"]
    code, _, err = _main(argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("algoformer.evaluate: error: ") and "Traceback" not in err
    assert not _OUT.exists()
