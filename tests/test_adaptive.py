"""Adaptive depth (``algoformer.adaptive``): each rule does what it claims, resume stays bit-exact,
bad options exit 2 with one line. Tiny sizes (d 3, N 5, width 16, one thread)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algoformer import adaptive, evaluate as evaluate_cli, train as train_cli
from algoformer.training.metrics import read_metrics
from algoformer.training.models import ModelSpec, build_model

TINY = ["--task", "linear", "--dim", "3", "--n-points", "5", "--width", "16", "--heads", "2", "--T", "4",
        "--delta-T", "4", "--batch-size", "8", "--lr", "1e-3", "--curriculum", "false", "--threads", "1",
        "--quiet", "--init-scale", "fan_in"]


def _model(mode: str, T: int = 4, seed: int = 0, model: str = "algoformer"):
    torch.manual_seed(seed)
    m = build_model(ModelSpec(model, width=16, heads=2, init_scale="fan_in"), 3, 1, 10)
    return adaptive.attach(m, mode, T).eval()


def test_exit_distribution_sums_to_one_and_follows_the_product():
    g = torch.Generator().manual_seed(0)
    for T in (1, 2, 5, 9):
        lam = torch.rand(T, 7, generator=g, dtype=torch.float64)
        lam[:, 0] = 1.0                                  # exits at loop 1 for sure
        lam[:, 1] = 0.0                                  # never exits: all mass on T
        p = adaptive.exit_distribution(lam)
        assert torch.allclose(p.sum(0), torch.ones(7, dtype=torch.float64), atol=1e-15, rtol=0)
        assert (p >= 0).all()
        for t in range(T - 1):
            assert torch.allclose(p[t], lam[t] * torch.prod(1 - lam[:t], dim=0))
        assert p[0, 0] == 1.0 and p[-1, 1] == 1.0


def test_threshold_rule_exits_where_the_cumulative_mass_first_passes():
    g = torch.Generator().manual_seed(1)
    p = adaptive.exit_distribution(torch.rand(6, 50, generator=g, dtype=torch.float64))
    for q in (0.05, 0.3, 0.5, 0.9, 1.0):
        t = adaptive.threshold_exit(p, q)
        for b in range(50):
            c = np.cumsum(p[:, b].numpy())
            first = next((k + 1 for k in range(6) if c[k] >= q), 6)
            assert int(t[b]) == first
            assert first == 1 or c[first - 2] < q          # the mass before the exit is below q
    with pytest.raises(ValueError, match="threshold=0 is invalid"):
        adaptive.threshold_exit(p, 0)


def test_inference_exit_matches_the_distribution_of_the_trained_gate():
    """ouro_run (incremental, only running examples computed) exits where threshold_exit on the gates of
    a full run says, and returns the output of that loop count."""
    m = _model("ouro", seed=2)
    torch.nn.init.normal_(m.exit_gate.proj.weight, std=2.0)
    x = torch.randn(32, 10, 3, generator=torch.Generator().manual_seed(3))
    answer, T = 8, 6
    with torch.no_grad():
        h = m.run_pre(m.embed(x))
        lams, outs = [], []
        for t in range(1, T + 1):
            h = m.run_loop(h, t)
            lams.append(m.exit_gate(h, answer))
            outs.append(m.run_post(h))
        p = adaptive.exit_distribution(torch.stack(lams))
    for q in (0.2, 0.5, 0.8):
        want = adaptive.threshold_exit(p, q)
        assert 1 < len(set(want.tolist()))                # the gate spreads the exits (the test can fail)
        out, loops = adaptive.ouro_run(m, x, T, answer, q)
        assert torch.equal(loops, want)
        ref = torch.stack([outs[int(t) - 1][b] for b, t in enumerate(want)])
        assert torch.allclose(out, ref, atol=1e-6, rtol=0)


def test_entropy_regulariser_prefers_the_uniform_prior_at_equal_losses():
    losses = torch.full((4, 1), 2.0)
    uni = torch.full((4, 1), 0.25)
    peaked = torch.tensor([[0.7], [0.1], [0.1], [0.1]])
    assert adaptive.ouro_objective(losses, uni, 0.1) < adaptive.ouro_objective(losses, peaked, 0.1)
    assert float(adaptive.uniform_kl(uni)) == pytest.approx(0.0, abs=1e-6)
    assert float(adaptive.ouro_objective(losses, uni, 0.1)) == pytest.approx(2.0 - 0.1 * math.log(4), rel=1e-6)


def test_consistency_loss_is_zero_on_identical_trajectories_and_flows_through_the_short_one():
    g = torch.Generator().manual_seed(4)
    full = torch.randn(3, 10, 1, generator=g, requires_grad=True)
    weight = torch.tensor([1.0, 0] * 5)
    assert float(adaptive.consistency_loss(full.detach().clone(), full, weight)) == 0.0
    short = torch.randn(3, 10, 1, generator=g, requires_grad=True)
    loss = adaptive.consistency_loss(short, full, weight)
    assert float(loss) > 0
    loss.backward()
    assert full.grad is None                              # the full trajectory is detached
    assert short.grad is not None and float(short.grad.abs().sum()) > 0
    assert float(short.grad[:, 1::2].abs().sum()) == 0.0   # unscored positions pull nothing


def test_budget_conditioning_is_a_no_op_at_init_and_changes_the_output_once_trained():
    plain, cond = _model("none", seed=5), _model("loopformer", seed=5)
    x = torch.randn(4, 10, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = plain(x, 3)
        with cond.loop_condition.budget(3):
            assert torch.equal(cond(x, 3), ref)           # zero-initialised scale and shift: exact
        torch.nn.init.normal_(cond.loop_condition.mlp[2].weight, std=0.1)
        with cond.loop_condition.budget(3):
            a = cond(x, 3)
        with cond.loop_condition.steps([0.125] * 3):       # same loops, another step size
            b = cond(x, 3)
        c = cond(x, 3)                                      # default: the full trajectory, dt = 1/4
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
    assert cond.loop_condition.time_of(3) == (0.5, 0.25)
    with pytest.raises(ValueError, match="budget=0 is invalid"):
        with cond.loop_condition.budget(0):
            pass


@pytest.mark.parametrize("mode", ["ouro", "loopformer"])
def test_resume_is_bit_exact(mode, tmp_path):
    common = TINY + ["--adaptive", mode, "--steps", "12", "--ckpt-every", "4", "--eval-every", "0",
                     "--log-every", "2"]
    run = lambda out, *extra: (train_cli.main(common + ["--out", str(tmp_path / out), *extra]) == 0 and
                               read_metrics(tmp_path / out / "metrics.jsonl"))
    full = run("full")
    part = run("part", "--stop-after", "6")
    resumed = run("part", "--resume")
    loss = lambda rows: [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    assert part and loss(resumed) == loss(full)
    a = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "ckpt.pt", weights_only=False)["model"]
    key = "exit_gate.proj.weight" if mode == "ouro" else "loop_condition.mlp.2.weight"
    assert key in a and float(a[key].abs().sum()) > 0      # the new parameters train and are saved
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, field", [
    (["--adaptive", "pondernet"], "adaptive"),
    (["--exit-beta", "-1"], "exit_beta"),
    (["--consistency", "nan"], "consistency"),
    (["--adaptive", "ouro", "--model", "standard"], "model"),
    (["--adaptive", "loopformer", "--init-from", "gd", "--curriculum", "false"], "init_from"),
])
def test_bad_options_exit_2_with_one_line(args, field, capsys, tmp_path):
    assert train_cli.main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and "Traceback" not in err


def test_evaluate_draws_error_against_loops_used(tmp_path, capsys):
    for mode in ("none", "ouro", "loopformer"):
        assert train_cli.main(TINY + ["--adaptive", mode, "--steps", "4", "--eval-every", "0",
                                      "--out", str(tmp_path / mode)]) == 0
    out = tmp_path / "eval"
    assert evaluate_cli.main([str(tmp_path / m) for m in ("none", "ouro", "loopformer")] +
                             ["--out", str(out), "--batch", "16", "--max-loops", "5", "--thresholds", "0.2,0.6,1"]) == 0
    res = json.loads((out / "eval.json").read_text())["loops_used"]
    assert (out / "loops_used.png").exists()
    assert len(res["runs"]["loopformer"]["budgets"]["error"]) == 4
    rows = res["runs"]["ouro"]["thresholds"]
    used = [r["mean_loops"] for r in rows]
    assert used == sorted(used) and used[-1] == 4.0       # a larger q never exits earlier; q = 1 runs T
    assert all(sum(r["loops_histogram"]) == 16 for r in rows)
    assert len(res["numpy"]["GD"]["error"]) == 4 and "GD on Phi*(x)" not in res["numpy"]
    capsys.readouterr()
    assert evaluate_cli.main([str(tmp_path / "ouro"), "--thresholds", "0,1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "thresholds" in err


def test_adaptive_depth_benchmark_refuses_bad_arguments_with_one_line(tmp_path):
    root = Path(__file__).resolve().parents[1]
    for bad in (["--tols", "0.1,-1"], ["--batch", "0"], ["--no-such"]):
        r = subprocess.run([sys.executable, str(root / "benchmarks" / "adaptive_depth.py"), str(tmp_path),
                            "--out", str(tmp_path / "o"), *bad], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
