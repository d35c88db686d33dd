"""Training from constructed weights (``--init-from``): exact at step 0, trainable, resumable, bad
arguments exit 2; and the layering (the model package never imports the constructions).

Tiny sizes (d = 3, N = 8, T = 3) so the file runs in a few seconds.

Tolerances. The initialised model runs the construction in float32 at the temperature chosen for
float32, so it agrees with numpy float64 up to the construction's float32 floor. ``python -m verify``
measures those floors at d = 20, N = 40, T = 20 (README table): relative 4.3e-4 (decoder-gd
prediction), 2.1e-3 (representation), Newton's median 1e-4 (worst of 64 problems 5e-2, a few
ill-conditioned ones). At these sizes we hold float32 to REL32 = 2e-3 of the largest reference
prediction. The same weights in float64 are held to REL64 = 1e-5: they then carry only the
truncation of the float32-chosen temperature (theta^2 with theta ~ 1e-3..1e-2, over T loops).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from algoformer import train as train_cli
from algoformer.tasks import Regression
from algoformer.training import initialisers
from algoformer.training.loss import loop_window
from algoformer.training.metrics import read_metrics
from constructions.initialise import split
from verify.algorithms_decoder import decoder_gd_reference
from verify.references import gd_reference, newton_reference

ROOT = Path(__file__).resolve().parents[1]
REL32, REL64 = 2e-3, 1e-5
D, N, T, DT = 3, 8, 3, 2
CASES = [("gd", "linear"), ("newton", "linear"), ("representation", "representation")]


def _args(name: str, task: str, out, *extra: str) -> list[str]:
    return ["--task", task, "--init-from", name, "--dim", str(D), "--n-points", str(N), "--T", str(T),
            "--delta-T", str(DT), "--batch-size", "32", "--threads", "1", "--quiet", "--eval-every", "0",
            "--out", str(out), *extra]


def _reference(name: str, cfg, prompt, notes: dict, loops: int) -> np.ndarray:
    """numpy float64 predictions after ``loops`` steps at the scored tokens, (B, n_scored)."""
    p = split(prompt)
    if name == "gd":
        return decoder_gd_reference(p, loops, notes["eta"]).predictions[:, loops, :, 0]
    if name == "newton":
        return newton_reference(p, loops, notes["alpha"]).predictions[:, loops, :1]
    phi = cfg.task_spec().phi
    f = Regression(phi(p.x), p.y, phi(p.x_test), p.y_test)
    return gd_reference(f, loops, notes["eta"]).predictions[:, loops, :1]


@pytest.mark.parametrize("name, task", CASES)
def test_step_zero_reproduces_the_algorithm_on_the_training_prompts(name, task, tmp_path):
    cfg, _ = train_cli.parse(_args(name, task, tmp_path))
    init = initialisers.load(name).build(cfg)
    rng = np.random.default_rng([cfg.seed, 0])              # the generator of train()'s first batch
    prompt = cfg.task_spec().sample(rng, cfg.batch_size, cfg.n_points)
    enc = init.encode(prompt)
    at = enc.weight > 0
    assert at.sum() == (N if name == "gd" else 1)          # gd scores every sample, like training from scratch
    ref = _reference(name, cfg, prompt, init.notes, T)
    scale = np.abs(ref).max()
    for dtype, rel in ((torch.float32, REL32), (torch.float64, REL64)):
        with torch.no_grad():
            out = init.model.to(dtype)(torch.tensor(enc.tokens, dtype=dtype), T)[:, at, 0].double().numpy()
        assert np.abs(out - ref).max() <= rel * scale, (dtype, np.abs(out - ref).max(), scale)
    # the targets are the task's labels of the same samples
    np.testing.assert_array_equal(enc.targets[:, at, 0], prompt.y[:, -at.sum():, 0].astype(np.float32))


@pytest.mark.parametrize("name, task", CASES)
def test_first_logged_loss_is_the_algorithms_eq3_loss(name, task, tmp_path):
    """train()'s loss at step 1 (computed before the first update) against numpy's Eq. 3 loss on the
    same batch: the mean over loops T0..T of the squared error of the reference predictions."""
    args = _args(name, task, tmp_path / "run", "--steps", "1", "--log-every", "1", "--lr", "1e-9")
    cfg, _ = train_cli.parse(args)
    assert train_cli.main(args) == 0
    logged = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"][0]["loss"]
    init = initialisers.load(name).build(cfg)
    prompt = cfg.task_spec().sample(np.random.default_rng([cfg.seed, 0]), cfg.batch_size, cfg.n_points)
    y = prompt.y[:, -(N if name == "gd" else 1):, 0].astype(np.float64)
    eq3 = np.mean([np.mean((_reference(name, cfg, prompt, init.notes, t) - y) ** 2)
                   for t in range(loop_window(T, DT), T + 1)])
    assert logged == pytest.approx(eq3, rel=4 * REL32)


def test_header_names_the_construction_and_variant(tmp_path, capsys):
    assert train_cli.main(_args("gd", "linear", tmp_path, "--steps", "1")) == 0
    out = capsys.readouterr().out
    assert "initialised from the gd construction" in out and "variant odd+mirror" in out
    assert "read-out C=" in out and "loop c=" in out


@pytest.mark.parametrize("name, task", CASES[:2])
def test_fine_tune_stays_finite_and_below_predict_zero(name, task, tmp_path):
    """At lr 1e-8, 30 Adam steps stay finite and below predict-zero in the median (a batch can hold an
    ill-conditioned problem that Newton after T = 3 steps predicts badly already at step 0). This does
    *not* say the run stays near its construction: Newton leaves it within two steps at this rate
    (README, "Training from constructed weights"); the decoder read-out is a sink head, the most
    sensitive part of gd."""
    args = _args(name, task, tmp_path / "run", "--steps", "30", "--log-every", "1", "--lr", "1e-8")
    assert train_cli.main(args) == 0
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    ratios = np.array([r["loss"] / r["zero_loss"] for r in rows])
    assert np.isfinite(ratios).all() and np.median(ratios[-10:]) < 1.0, ratios


def test_resume_from_an_initialised_run_is_bit_exact(tmp_path):
    common = _args("newton", "linear", "{out}", "--steps", "6", "--log-every", "1", "--ckpt-every", "3",
                   "--lr", "1e-8")
    run = lambda out, *extra: train_cli.main([a.replace("{out}", str(out)) for a in common] + list(extra))
    assert run(tmp_path / "full") == 0
    assert run(tmp_path / "part", "--stop-after", "3") == 0
    assert run(tmp_path / "part", "--resume") == 0
    loss = lambda d: [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "train"]
    assert loss(tmp_path / "part") == loss(tmp_path / "full")
    assert json.loads((tmp_path / "part" / "config.json").read_text())["init_from"] == "newton"


@pytest.mark.parametrize("args, words", [
    (["--task", "ar", "--init-from", "newton"], ["task='ar'", "linear"]),
    (["--task", "linear", "--init-from", "representation"], ["task='linear'", "representation"]),
    (["--task", "linear", "--init-from", "gd", "--width", "256"], ["width=256", "expected 75"]),
    (["--task", "linear", "--init-from", "gd", "--heads", "8"], ["heads=8", "expected 2"]),
    (["--task", "linear", "--init-from", "gd", "--layers", "3"], ["layers=3", "expected 1"]),
    (["--task", "linear", "--init-from", "gd", "--curriculum", "true"], ["curriculum=True", "false"]),
    (["--task", "linear", "--init-from", "gd", "--model", "standard"], ["model='standard'", "algoformer"]),
    (["--task", "linear", "--init-from", "newton", "--n-points", "3"], ["n_points=3", ">= d + 1 = 4"]),
    (["--task", "linear", "--init-from", "copy"], ["init_from='copy'", "gd, newton, representation"]),
])
def test_bad_init_arguments_exit_2_with_one_line(args, words, capsys, tmp_path):
    base = ["--dim", str(D), "--n-points", str(N), "--out", str(tmp_path)]
    assert train_cli.main(base + args) == 2          # later flags win: --n-points 3 overrides
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err


def test_width_75_is_the_constructions_width():
    """The expected width in the table above is the decoder layout's: x, y, pos, prev, 5 indicators,
    xm, ym, member, xn, w, pred (pos: Lemma A.1 codes for N + 1 = 9 positions)."""
    from constructions.causal_gd import decoder_layout
    from constructions.embeddings import quasi_orthogonal
    cfg, _ = train_cli.parse(_args("gd", "linear", "/tmp/unused"))
    assert cfg.width == decoder_layout(D, quasi_orthogonal(N + 1, 0.1, 0).shape[1]).dim


def test_algoformer_never_imports_constructions_or_verify():
    for path in (ROOT / "algoformer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("constructions", "verify") for n in names), (path, names)


# -- evaluate ---------------------------------------------------------------------------------------
EVAL_BATCH, EVAL_SEED, MAX_LOOPS = 64, 7, 4 * T
# Adam moves every weight by about lr whatever its gradient (zeros included), and at lr 1e-8 two steps
# already take Newton far from its construction (measured: error at T 60 against numpy's 1.6, d = 3,
# N = 8). These runs check evaluate, not fine-tuning: at lr 1e-30 every nonzero float32 weight is
# unchanged and the zeros move to ~1e-30, so the run is still the construction.
UNTRAINED = ("--steps", "2", "--lr", "1e-30")


def _evaluate(run, out, capsys) -> tuple[dict, list[str]]:
    from algoformer import evaluate
    capsys.readouterr()
    rc = evaluate.main([str(run), "--out", str(out), "--batch", str(EVAL_BATCH), "--seed", str(EVAL_SEED),
                        "--max-loops", str(MAX_LOOPS)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "does not support" not in captured.err and "error" not in captured.err
    return json.loads((out / "eval.json").read_text()), captured.out.splitlines()


def _error_bound(ref: np.ndarray, y: np.ndarray) -> float:
    """|mean (p - y)^2 - mean (r - y)^2| <= mean |p - r| (2 |r - y| + |p - r|) for |p - r| <= delta,
    delta = REL32 x the largest reference prediction (the step-0 tolerance)."""
    delta = REL32 * np.abs(ref).max()
    return float(np.mean(delta * (2 * np.abs(ref - y) + delta)))


@pytest.mark.parametrize("name, task", CASES)
def test_evaluate_compares_an_initialised_run_with_its_algorithm_loop_by_loop(name, task, tmp_path, capsys):
    """evaluate rebuilds the run through the plug-in and re-encodes the same task prompts; its per-loop
    error at T and at 4T matches the numpy algorithm (verify's references, the construction's step)
    on the same prompts, and its own reference curve is that algorithm at every loop."""
    args = _args(name, task, tmp_path / "run", *UNTRAINED)
    cfg, _ = train_cli.parse(args)
    assert train_cli.main(args) == 0
    result, out = _evaluate(tmp_path / "run", tmp_path / "ev", capsys)
    notes = initialisers.load(name).build(cfg).notes
    prompt = cfg.task_spec().sample(np.random.default_rng(EVAL_SEED), EVAL_BATCH, cfg.n_points)
    n_scored = N if name == "gd" else 1
    y = prompt.y[:, -n_scored:, 0].astype(np.float64)
    curve, own = result["per_loop"]["run"], result["per_loop_reference"]["run"]["per_loop"]
    assert len(curve) == len(own) == MAX_LOOPS + 1
    for t in (T, MAX_LOOPS):
        ref = _reference(name, cfg, prompt, notes, t)
        err = float(np.mean((ref - y) ** 2))
        assert abs(curve[t] - err) <= _error_bound(ref, y), (t, curve[t], err)
    y32 = y.astype(np.float32).astype(np.float64)           # the prompt holds its targets in float32
    own_ref = [np.mean((_reference(name, cfg, prompt, notes, t) - y32) ** 2) for t in range(MAX_LOOPS + 1)]
    np.testing.assert_allclose(own, own_ref, rtol=1e-9, atol=1e-300)
    assert result["figures"] == (["fig2_samples.png", "fig3_loops.png", "fig5_baselines.png"] if name == "gd"
                                 else ["fig3_loops.png"])
    for fig in ("fig2_samples.png", "fig3_loops.png", "fig5_baselines.png"):
        assert (tmp_path / "ev" / fig).exists() == (fig in result["figures"]), fig
    assert any(line.strip().startswith("run: per loop: T=3") for line in out), out


def test_evaluate_gd_per_sample_curve_is_prefix_gd(tmp_path, capsys):
    """The decoder construction answers at every x_i: its Fig. 2 curve is prefix GD after T steps, sample
    by sample, and it is drawn in Fig. 2 and Fig. 5 with no reason line."""
    args = _args("gd", "linear", tmp_path / "run", *UNTRAINED)
    cfg, _ = train_cli.parse(args)
    assert train_cli.main(args) == 0
    result, out = _evaluate(tmp_path / "run", tmp_path / "ev", capsys)
    prompt = cfg.task_spec().sample(np.random.default_rng(EVAL_SEED), EVAL_BATCH, cfg.n_points)
    ref = _reference("gd", cfg, prompt, initialisers.load("gd").build(cfg).notes, T)          # (B, N)
    y = prompt.y[..., 0].astype(np.float64)
    curve = result["per_sample"]["run"]
    assert len(curve) == N
    for i in range(N):
        err = float(np.mean((ref[:, i] - y[:, i]) ** 2))
        assert abs(curve[i] - err) <= _error_bound(ref[:, i], y[:, i]) + REL32 ** 2 * np.abs(ref).max() ** 2, i
    assert result["not_drawn"] == {} and not any("not drawn" in line for line in out)


@pytest.mark.parametrize("name, task", CASES[1:])
def test_evaluate_says_in_one_line_why_an_encoder_run_has_no_sample_curve(name, task, tmp_path, capsys):
    assert train_cli.main(_args(name, task, tmp_path / "run", *UNTRAINED)) == 0
    result, out = _evaluate(tmp_path / "run", tmp_path / "ev", capsys)
    for fig in ("fig2_samples.png", "fig5_baselines.png"):
        reason = [line for line in out if line.startswith(f"{fig}: run 'run' not drawn")]
        assert len(reason) == 1 and f"the {name} construction answers only at x_N" in reason[0], out
        assert f"after {N - 1} in-context samples" in reason[0]
        assert not (tmp_path / "ev" / fig).exists()
    assert list(result["answers"]["run"]) == [str(N - 1)]       # x_N, after N - 1 context samples (JSON keys)
    assert result["answers"]["run"][str(N - 1)] == pytest.approx(result["per_loop"]["run"][T], rel=1e-6)


def test_evaluate_refuses_an_initialised_run_at_another_n_points(tmp_path, capsys):
    from algoformer import evaluate
    scratch = ["--task", "linear", "--dim", str(D), "--n-points", str(N - 2), "--width", "16", "--heads", "2",
               "--T", str(T), "--delta-T", str(DT), "--batch-size", "8", "--steps", "1", "--quiet",
               "--eval-every", "0", "--out", str(tmp_path / "scratch")]
    assert train_cli.main(scratch) == 0
    assert train_cli.main(_args("gd", "linear", tmp_path / "gd", *UNTRAINED)) == 0
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "scratch"), str(tmp_path / "gd"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"n_points={N}" in err and f"the first run {N - 2}" in err, err


def _sign_step(model: torch.nn.Module, size: float, seed: int = 0) -> torch.nn.Module:
    """Adam's first step moves every weight by about lr, zeros included: the same, with random signs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.sign(torch.randn(p.shape, generator=g, dtype=p.dtype)))
    return model


@pytest.mark.parametrize("register_bound, x_bound, worst", [(1e8, 100.0, None), (1e2, 10.0, 1e-2)])
def test_tight_gates_keep_the_construction_under_a_sign_step(register_bound, x_bound, worst):
    """Why fine-tuning left the constructions: the exact gates multiply indicator rows by B
    (register_bound, x_bound), and a 1e-8 step on a zero weight writes ~1e-8 into those rows. With
    verify's B = 1e8 the Newton AlgoFormer's output moves by O(1) within 20 loops; with B ~ 1e2 it
    stays within 1e-2 (relative). ``initialise`` therefore takes B from the calibration data."""
    from constructions.bridge import build_model
    from verify.algorithms import NEWTON, Options
    from verify.sweep import auto_temps
    opts = Options(N=8, d=3, problems=16, register_bound=register_bound, x_bound=x_bound)
    p = NEWTON.draw(np.random.default_rng(0), opts)
    alpha = NEWTON.choose_step(p)
    con = NEWTON.build(opts, alpha, auto_temps("odd+mirror", 18, NEWTON.score_bounds(p, alpha), "float32"), "odd+mirror")
    tokens = torch.from_numpy(con.encode(p.x, p.y, p.x_test))

    def answer(model):
        with torch.no_grad():
            return con.answer.read(con.layout, model(tokens, 20)).numpy()
    base = answer(build_model(con.weights, dtype=torch.float64))
    moved = answer(_sign_step(build_model(con.weights, dtype=torch.float64), 1e-8))
    dev = np.nan_to_num(np.abs(moved - base).max() / np.abs(base).max(), nan=np.inf)
    if worst is None:
        assert dev > 0.1
    else:
        assert dev < worst


@pytest.mark.parametrize("name, task", CASES[1:])
def test_init_from_models_survive_a_sign_step(name, task, tmp_path):
    """The models behind --init-from (gates from the calibration batch): a 1e-8 step on every weight
    moves the predictions after 4T loops by < 1e-2 of their size (float64, so only the step shows).
    Not gd: its read-out is a sink head (value weights e^C / c ~ 1e9, C ~ 20), and the same step moves
    every prediction by ~0.08 (measured; README)."""
    cfg, _ = train_cli.parse(_args(name, task, tmp_path))
    init = initialisers.load(name).build(cfg)
    prompt = cfg.task_spec().sample(np.random.default_rng([cfg.seed, 0]), cfg.batch_size, cfg.n_points)
    enc = init.encode(prompt)
    at = enc.weight > 0
    tokens = torch.tensor(enc.tokens, dtype=torch.float64)
    model = init.model.to(torch.float64)
    with torch.no_grad():
        base = model(tokens, 4 * T)[:, at, 0].numpy()
        moved = _sign_step(model, 1e-8)(tokens, 4 * T)[:, at, 0].numpy()
    assert np.abs(moved - base).max() < 1e-2 * np.abs(base).max()
