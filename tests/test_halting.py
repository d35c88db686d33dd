"""Loops that halt: the model's halting rule, the convergence gadget, and the loops and iterates
against numpy's own stopping loop (``verify.halting``)."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig
from algoformer.halting import Halting
from constructions import reference
from constructions.bridge import build_model
from constructions.halting import gd_halting, latch_layer, measure_layer, newton_halting, widened_layout
from constructions.layout import Layout
from constructions.weights import AlgoFormerWeights, FFNWeights, LayerWeights
from verify.algorithms import Options
from verify.cli import build_parser, main
from verify.emulate import emulate
from verify.halting import compare, first_below, prepare, update_norms
from verify.references import gd_reference, newton_reference

REFERENCES = {"gd": gd_reference, "newton": newton_reference}


# -- the model's halting rule on a counter whose flag turns on after g loops -----------------------
def counter_model(D_extra: int = 0) -> tuple[AlgoFormer, Layout]:
    """Rows c (counter), g (goal), f (flag), o (output). Loop: c += 1, then f += [c >= g] (integers).
    Post: o += 2 c. So an example with goal g on every token halts after max(g, 1) loops."""
    lay = Layout()
    for name in ("c", "g", "f", "o"):
        lay.add(name, 1)
    D = lay.dim
    z = lambda *s: np.zeros(s)
    w2 = z(D, 1); w2[lay.row("c")] = 1.0
    tick = LayerWeights(ffn=FFNWeights(z(1, D), np.ones(1), w2, z(D)), name="tick")
    w1 = z(2, D); w1[:, lay.row("c")] = 1.0; w1[:, lay.row("g")] = -1.0
    w2 = z(D, 2); w2[lay.row("f")] = [1.0, -1.0]
    step = LayerWeights(ffn=FFNWeights(w1, np.array([1.0, 0.0]), w2, z(D)), name="flag")
    w1 = z(2, D); w1[0, lay.row("c")] = 1.0; w1[1, lay.row("c")] = -1.0
    w2 = z(D, 2); w2[lay.row("o")] = [2.0, -2.0]
    post = LayerWeights(ffn=FFNWeights(w1, z(2), w2, z(D)), name="out")
    w = AlgoFormerWeights(lay, pre=(LayerWeights(name="id"),), loop=(tick, step), post=(post,))
    return build_model(w), lay


def counter_input(lay: Layout, goals, n: int = 3, flag0=None) -> torch.Tensor:
    x = np.zeros((len(goals), n, lay.dim))
    x[:, :, lay.row("g")] = np.asarray(goals, float)[:, None] if np.ndim(goals) == 1 else goals
    if flag0 is not None:
        x[:, :, lay.row("f")] = np.asarray(flag0, float)[:, None]
    return torch.from_numpy(x)


RULE = Halting(rows=(2,))


def test_each_example_halts_when_its_flag_is_on_and_keeps_its_state():
    model, lay = counter_model()
    goals = [3, 1, 7, 5, 40]
    x = counter_input(lay, goals)
    out = model.forward_halting(x, RULE, max_loops=20)
    want = np.minimum(np.maximum(goals, 1), 20)
    np.testing.assert_array_equal(out.loops.numpy(), want)
    assert out.loops.dtype == torch.long
    for b, k in enumerate(want):                     # the output is TF_post after its own loops, exactly
        torch.testing.assert_close(out.output[b:b + 1], model(x[b:b + 1], int(k)), rtol=0, atol=0)


def test_cache_has_per_loop_states_frozen_after_halting_and_exits_early():
    model, lay = counter_model()
    goals = [2, 4, 3]
    out, cache = model.run_with_cache(counter_input(lay, goals), 50, halting=RULE)
    np.testing.assert_array_equal(cache["hook_loops"].numpy(), goals)
    assert "loop.4.hook_state" in cache and "loop.5.hook_state" not in cache   # no loop after all halted
    for t in range(1, 5):
        state = cache[f"loop.{t}.hook_state"]
        assert state.shape == (3, 3, lay.dim)
        np.testing.assert_array_equal(state[:, 0, lay.row("c")].numpy(), np.minimum(t, goals))  # frozen
        running = cache[f"loop.{t}.hook_running"].numpy()
        np.testing.assert_array_equal(running, np.flatnonzero(np.array(goals) >= t))
        assert cache[f"loop.{t}.0.hook_resid_post"].shape[0] == len(running)   # only running examples
    assert sum(len(cache[f"loop.{t}.hook_running"]) for t in range(1, 5)) == sum(goals)  # <= 3 * 50
    fixed, cache_T = model.run_with_cache(counter_input(lay, goals), 4)
    np.testing.assert_array_equal(cache_T["hook_loops"].numpy(), [4, 4, 4])


def test_designated_tokens_and_a_flag_set_by_the_pre_transformer():
    model, lay = counter_model()
    goals = np.array([[2.0, 9.0, 9.0], [6.0, 1.0, 1.0]])          # per token
    x = counter_input(lay, goals)
    assert model.forward_halting(x, Halting(rows=(2,), tokens=(0,)), 30).loops.tolist() == [2, 6]
    assert model.forward_halting(x, Halting(rows=(2,), tokens=(1, 2)), 30).loops.tolist() == [9, 1]
    assert model.forward_halting(x, RULE, 30).loops.tolist() == [9, 6]
    x0 = counter_input(lay, [5, 5], flag0=[1.0, 0.0])              # flag already on after TF_pre
    assert model.forward_halting(x0, RULE, 30).loops.tolist() == [0, 5]


def test_halting_backpropagates_on_a_trainable_model():
    cfg = LayerConfig(d_model=8, n_heads=2, d_head=4, d_ff=8, pre_norm=True)
    torch.manual_seed(0)
    model = AlgoFormer(AlgoFormerConfig(pre=(cfg,), loop=(cfg,), post=(cfg,)))
    out = model.forward_halting(torch.randn(4, 5, 8), Halting(rows=(0, 1), threshold=0.0), 6)
    out.output.sum().backward()
    assert all(p.grad is not None for p in model.pre.parameters())
    assert ((out.loops >= 0) & (out.loops <= 6)).all()


@pytest.mark.parametrize("kw,match", [(dict(rows=()), "rows"), (dict(rows=(1.5,)), "rows"),
                                      (dict(rows=(0,), threshold=float("nan")), "threshold"),
                                      (dict(rows=(0,), tokens=(-1,)), "tokens")])
def test_bad_rules_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        Halting(**kw)


def test_rules_that_do_not_fit_the_state_are_refused():
    model, lay = counter_model()
    x = counter_input(lay, [1])
    with pytest.raises(ValueError, match="rows=.*width D=4"):
        model.forward_halting(x, Halting(rows=(4,)), 3)
    with pytest.raises(ValueError, match="tokens=.*n=3"):
        model.forward_halting(x, Halting(rows=(2,), tokens=(3,)), 3)
    with pytest.raises(ValueError, match="n_loops"):
        model.forward_halting(x, RULE, -1)


# -- the gadget's two loop layers on hand-set iterates ----------------------------------------------
def gadget_layout() -> Layout:
    lay = Layout(); lay.add("reg", 2); lay.add("is_off", 1)
    return widened_layout(lay, "reg")


@given(old=st.lists(st.floats(-5, 5), min_size=8, max_size=8),
       step=st.lists(st.floats(-3e-3, 3e-3), min_size=8, max_size=8), flag=st.sampled_from([0.0, 1.0]))
def test_gadget_flags_the_example_iff_its_linf_update_is_below_tol(old, step, flag):
    tol, ramp, n = 1e-3, 1e-6, 4
    lay = gadget_layout()
    layers = (measure_layer(lay, "reg", tol, ("is_off",), 2e3), latch_layer(lay, "reg", ramp, n))
    h = np.zeros((1, n, lay.dim))
    h[0, :, lay["prev"]] = np.reshape(old, (n, 2))
    h[0, :, lay["reg"]] = np.reshape(old, (n, 2)) + np.reshape(step, (n, 2))
    h[0, 3, lay.row("is_off")] = 1.0                                  # token 3 holds no iterate
    h[0, 3, lay["reg"]] += 1.0                                        # a large update there is ignored
    h[0, :, lay.row("halt")] = flag
    out = reference.apply_stack(layers, h)[0]
    delta = np.abs(np.reshape(step, (n, 2))[:3]).max()
    flags = out[:, lay.row("halt")]
    assert np.all(flags == flags[0])                                  # one flag per example
    if flag == 1.0 or delta <= tol:
        assert flags[0] == 1.0                                        # set, and once set stays set
    elif delta >= tol + ramp / 2:
        assert flags[0] <= 0.5
    np.testing.assert_array_equal(out[:, lay["prev"]], h[0, :, lay["reg"]])   # the next snapshot, exact
    assert np.all(out[:, lay.row("excess")] == 0) and np.all(out[:, lay.row("total")] == 0)
    np.testing.assert_array_equal(out[:, lay["reg"]], h[0, :, lay["reg"]])    # the iterate untouched


def test_gadget_leaves_the_construction_s_iterates_unchanged():
    opts = Options(N=6, d=2, problems=3, seed=1)
    su = prepare("gd", opts)
    base = su.base(opts)
    hc = gd_halting(base, 1e-3)
    emu = emulate(base, su.problem, 8)
    model = build_model(hc.construction.weights)
    _, cache = model.run_with_cache(torch.from_numpy(hc.construction.encode(su.problem.x, su.problem.y,
                                                                             su.problem.x_test)), 8)
    for t in range(1, 9):
        got = hc.construction.iterate.read(hc.construction.layout, cache[f"loop.{t}.hook_state"]).numpy()
        np.testing.assert_allclose(got, emu.iterates[:, t], rtol=0, atol=1e-14 * np.abs(emu.iterates).max())


def test_flag_in_a_fixed_T_run_turns_on_at_the_halting_loop_and_stays_on():
    opts = Options(N=6, d=2, problems=4, seed=2)
    su = prepare("newton", opts)
    hc = newton_halting(su.base(opts), 1e-4)
    model = build_model(hc.construction.weights)
    x = torch.from_numpy(hc.construction.encode(su.problem.x, su.problem.y, su.problem.x_test))
    loops = model.forward_halting(x, hc.rule, 30).loops.numpy()
    _, cache = model.run_with_cache(x, 30)
    halt = hc.construction.layout.row("halt")
    for t in range(1, 31):
        flags = cache[f"loop.{t}.hook_state"][:, :, halt].numpy()            # (B, n)
        for b, k in enumerate(loops):
            if t >= k:
                assert np.all(flags[b] == 1.0)                                 # on, on every token, for good
            else:
                assert not np.all(flags[b] > 0.5)


# -- against numpy --------------------------------------------------------------------------------
def test_update_norms_and_numpy_stopping_loop():
    it = np.array([[0.0, 1.0, 1.5, 1.75, 1.875, 1.9375]])[..., None]  # dyadic: exact updates
    np.testing.assert_array_equal(update_norms(it), [[1, 0.5, 0.25, 0.125, 0.0625]])
    assert first_below(update_norms(it), 0.25).tolist() == [3]        # <= tol stops
    assert first_below(update_norms(it), 1e-9).tolist() == [5]        # never: the cap T


@pytest.mark.parametrize("name,tol", [("gd", 1e-3), ("newton", 1e-4)])
def test_loops_agree_and_halted_iterates_are_within_the_bound(name, tol):
    config, run = compare(name, Options(N=10, d=3, problems=8, seed=3), tol, 80)
    assert run.passed
    assert not run.may_differ.all()                                   # agreement is asserted, not excused
    np.testing.assert_array_equal(run.loops_model[~run.may_differ], run.loops_numpy[~run.may_differ])
    assert np.all(run.error <= run.bound)
    assert run.loops_model.sum() < 8 * 80                             # it exited early


@pytest.mark.parametrize("name,tol0", [("gd", 1e-3), ("newton", 1e-4)])
def test_disagreements_are_exactly_where_the_update_is_near_the_tolerance(name, tol0):
    """A tolerance placed between numpy's update a_k and the model's measured update at the loop
    where numpy stops: the two must disagree there, and the band must have flagged it."""
    opts = Options(N=10, d=3, problems=6, seed=5)
    su = prepare(name, opts)
    T = 40
    ref = REFERENCES[name](su.problem, T, su.step).iterates
    emu = emulate(su.base(opts), su.problem, T, every_prediction=False)
    a, a_model = update_norms(ref), update_norms(emu.iterates)
    k = int(first_below(a, tol0)[0])
    assert abs(a[0, k - 1] - a_model[0, k - 1]) > 1e-14               # they do differ at loop k
    tol = 0.5 * (a[0, k - 1] + a_model[0, k - 1])
    _, run = compare(name, opts, tol, T, ramp=1e-16)
    assert run.loops_model[0] != run.loops_numpy[0] and run.may_differ[0]
    assert not run.unexplained.any()                                  # every disagreement is a near one
    assert np.all(run.error <= run.bound)


def test_newton_gadget_watches_only_the_x_tokens():
    su = prepare("newton", Options(N=5, d=2, problems=2, seed=0))
    hc = newton_halting(su.base(Options(N=5, d=2, problems=2, seed=0)), 1e-4)
    assert hc.construction.layout.size("prev") == 2 and hc.rule.rows == (hc.construction.layout.row("halt"),)


# -- the command line -----------------------------------------------------------------------------
SMALL = ["--N", "6", "--d", "2", "--problems", "3", "--max-loops", "40"]


def test_cli_prints_loops_against_numpy_and_is_seeded(capsys):
    assert main(["halting", "--algorithm", "gd", "--tol", "1e-3"] + SMALL) == 0
    first = capsys.readouterr().out
    assert "loops agree on 3/3" in first and "PASS" in first and "seed=0" in first and "dtype=float64" in first
    assert main(["halting", "--algorithm", "gd", "--tol", "1e-3"] + SMALL) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("argv", [["--algorithm", "sor", "--tol", "1e-3"], ["--algorithm", "gd", "--tol", "-1"],
                                  ["--algorithm", "gd"], ["--algorithm", "gd", "--tol", "1e-3", "--max-loops", "0"],
                                  ["--algorithm", "gd", "--tol", "1e-3", "--json", "/no/such/dir/out.json"],
                                  ["--algorithm", "gd", "--tol", "1e-3", "--max-lo", "5"]])
def test_cli_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert main(["halting"] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_cli_writes_json(tmp_path, capsys):
    import json
    path = tmp_path / "halting.json"
    assert main(["halting", "--algorithm", "newton", "--tol", "1e-4", "--json", str(path)] + SMALL) == 0
    data = json.loads(path.read_text())
    assert data["passed"] and len(data["problems"]) == 3 and data["config"]["tol"] == 1e-4
    assert all(p["error"] <= p["bound"] for p in data["problems"])


def test_cli_lists_halting():
    assert "halting" in build_parser().format_help()
