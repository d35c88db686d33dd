"""Views of a constructed model (verify.views) and the CLI flags that write them."""
import numpy as np
import pytest
import torch

from verify.algorithms import ALGORITHMS, Options
from verify.cli import main
from verify.sweep import auto_temps
from constructions.linearise import DEFAULT_VARIANT
from verify.views import attention_figure, layout_figure, linear_part, linearised, pick_loops, run_cached

OPTS = Options(N=5, d=2, problems=2)


def _con(name, variant="odd"):
    algo = ALGORITHMS[name]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps(variant, 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    return algo.build(OPTS, step, temps, variant), problem


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
    assert linearised(loop[0]) == "sink" and linearised(rows[0][1][0]) is None   # pairing head: selection
    dev = linear_part(loop[0])                         # ~ c (a_jk - mean_k a_jk), k over non-sink keys
    h = run_cached(con, problem, 3, index=1)["hook_pre"]                      # (n, D) after TF_pre
    a = h[:, con.layout["x"]] @ h[:-1, con.layout["xN"]].T                   # query x_j . key xN_k
    rows = slice(0, 2 * OPTS.N, 2)                                             # the x-tokens' queries
    centred = a - a.mean(1, keepdims=True)
    corr = np.corrcoef(dev[rows].ravel(), centred[rows].ravel())[0, 1]
    assert corr > 0.9999


def test_mirror_heads_are_recognised(tmp_path):
    con, problem = _con("newton", DEFAULT_VARIANT)
    rows = attention_figure(con, problem, 2, str(tmp_path / "m.png"))
    kinds = {t: linearised(p[0]) for t, p, _ in rows}
    assert kinds["loop 1 newton-step"] == ("mirror" if DEFAULT_VARIANT.endswith("+mirror") else "sink")
    assert kinds["post.0 copy-y"] is None


def test_layout_figure_panels_follow_the_loop(tmp_path):
    con, problem = _con("newton")
    panels = layout_figure(con, problem, 4, str(tmp_path / "l.png"))
    assert [t for t, _ in panels] == ["prompt", "after TF_pre", "loop 1", "loop 2", "loop 3", "loop 4",
                                      "after TF_post"]
    assert all(s.shape == (2 * OPTS.N + 2, con.layout.dim) for _, s in panels)
    assert (tmp_path / "l.png").stat().st_size > 10_000


def test_cli_show_attention_and_layout(tmp_path, capsys):
    a, l = tmp_path / "att.png", tmp_path / "lay.png"
    rc = main(["gd", "--iters", "1", "--N", "3", "--d", "1", "--problems", "1", "--dtype", "float64",
               "--quiet", "--show-attention", str(a), "--show-layout", str(l)])
    assert rc == 0 and a.stat().st_size > 10_000 and l.stat().st_size > 10_000
    assert "verdict" in capsys.readouterr().out
