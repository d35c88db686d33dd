"""Views of a constructed model (verify.views) and the CLI flags that write them."""
import numpy as np
import pytest
import torch

from verify.algorithms import ALGORITHMS, Options
from verify.cli import main
from verify.sweep import auto_temps
from verify.views import (attention_figure, layout_figure, linear_part, pick_loops, sink_dominated,
                          state_panels)

OPTS = Options(N=5, d=2, problems=2)


def _con(name):
    algo = ALGORITHMS[name]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps("odd", 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    return algo.build(OPTS, step, temps, "odd"), problem


@pytest.mark.parametrize("iters, want", [(0, []), (3, [1, 2, 3]), (20, [1, 5, 9, 12, 16, 20])])
def test_pick_loops(iters, want):
    assert pick_loops(iters) == want


def test_attention_panels_are_softmax_and_linearised_heads_show_the_gram(tmp_path):
    con, problem = _con("gd")
    rows = attention_figure(con, problem, 3, str(tmp_path / "a.png"), index=1)
    assert (tmp_path / "a.png").stat().st_size > 10_000
    titles = [t for t, _, _ in rows]
    assert titles[0].startswith("pre.0") and titles[-1].startswith("post.0") and len(rows) == 5
    for _, p, _ in rows:
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    loop = rows[1][1]                                  # (H, n, n) of loop 1
    assert sink_dominated(loop[0]) and not sink_dominated(rows[0][1][0])
    dev = linear_part(loop[0])                         # ~ c (a_ij - mean_i a_ij), a = x_j . x_i / N
    x = problem.x[1]
    gram = x @ x.T                                     # x-tokens are the even ones
    sub = dev[0:2 * OPTS.N:2, 0:2 * OPTS.N:2]
    centred = gram - gram.sum(1, keepdims=True) / (2 * OPTS.N + 1)   # mean over the 2N + 1 non-sink keys
    corr = np.corrcoef(sub.ravel(), centred.ravel())[0, 1]
    assert corr > 0.9999


def test_layout_figure_panels_follow_the_loop(tmp_path):
    con, problem = _con("newton")
    panels = layout_figure(con, problem, 4, str(tmp_path / "l.png"))
    assert [t for t, _ in panels] == ["prompt", "after TF_pre", "loop 1", "loop 2", "loop 3", "loop 4",
                                      "after TF_post"]
    assert all(s.shape == (2 * OPTS.N + 2, con.layout.dim) for _, s in panels)
    assert (tmp_path / "l.png").stat().st_size > 10_000


def test_cli_show_attention_and_layout(tmp_path, capsys):
    a, l = tmp_path / "att.png", tmp_path / "lay.png"
    rc = main(["gd", "--iters", "2", "--N", "4", "--d", "2", "--problems", "2", "--dtype", "float64",
               "--quiet", "--show-attention", str(a), "--show-layout", str(l)])
    assert rc == 0 and a.stat().st_size > 10_000 and l.stat().st_size > 10_000
    assert "verdict" in capsys.readouterr().out
