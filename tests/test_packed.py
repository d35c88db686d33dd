"""The packed emulation (``verify.packed``) gives the model's numbers bit for bit: per construction
against ``emulate.emulate``, and whole sweeps (``run_sweep(packed=True)``, temperatures batched)
against the row-by-row path on the model (``packed=False``), for every builtin that sweeps."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from verify import registry
from verify.emulate import emulate
from verify.interface import Options
from verify.packed import ChunkPool, Packed, emulate_many
from verify.sweep import run_sweep, schedule_temps

SMALL = Options(N=6, d=3, problems=4, seed=1, q=2)
SWEEPS = ("gd", "newton", "representation", "ar", "decoder-gd", "cot")   # every builtin on run_sweep


def _setup(name, opts=SMALL):
    algo = registry.get(name)
    p = algo.draw(np.random.default_rng(opts.seed), opts)
    step = algo.choose_step(p)
    return algo, p, step, algo.score_bounds(p, step), algo.n_tokens(opts)


def _same_rows(a, b) -> bool:
    eq = lambda x, y: x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
    return len(a) == len(b) and all(all(eq(getattr(r, f.name), getattr(s, f.name)) for f in dataclasses.fields(r))
                                    for r, s in zip(a, b))


@pytest.mark.parametrize("name", SWEEPS)
def test_packed_sweep_gives_the_row_by_row_rows_bit_for_bit(name):
    algo = registry.get(name)
    variants = [v for v in (("odd", "richardson4+mirror") if name in ("gd", "newton") else ("odd",))
                if algo.supports(v)]
    thetas = [1e-1, 1e-2, 1e-3, 1e-5, 1e-300]
    args = (algo, SMALL, 3, variants, ["float64", "float32"], "cpu", thetas)
    _, packed = run_sweep(*args, packed=True)
    _, model = run_sweep(*args, packed=False)
    assert len(packed) > 2 * len(variants) * 2          # coarse, refinement and automatic rows were run
    assert any(r.status == "ok" for r in packed)
    assert _same_rows(packed, model)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float32+attn64", "bfloat16", "bfloat16+attn32"])
@pytest.mark.parametrize("name", ["gd", "newton", "decoder-gd"])
def test_every_construction_of_a_batch_is_the_models_run_bit_for_bit(name, dtype):
    algo, p, step, scores, n = _setup(name)
    for variant in [v for v in ("odd+mirror", "richardson6", "odd") if algo.supports(v)][:2]:
        cons = [algo.build(SMALL, step, schedule_temps(t, variant, n, scores), variant) for t in (1e-1, 1e-3, 1e-6)]
        for got, con in zip(emulate_many(cons, p, 4, dtype), cons):
            want = emulate(con, p, 4, dtype, every_prediction=False)
            np.testing.assert_array_equal(got.iterates, want.iterates)
            np.testing.assert_array_equal(got.predictions, want.predictions)     # NaN before the last loop


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_packed_forward_skips_the_zeros_at_the_main_commands_sizes(dtype):
    """The Newton loop reads the x and Mx registers (2d of D columns) and writes d rows: at the main
    command's sizes the probes accept restricted products on this CPU's kernels, so the packed
    forward multiplies fewer FLOPs than the model's dense one (``benchmarks/verify_throughput.py``
    counts both), and reads at least every nonzero column."""
    opts = Options()
    algo, p, step, scores, n = _setup("newton", opts)
    con = algo.build(opts, step, schedule_temps(1e-2, "odd+mirror", n, scores), "odd+mirror")
    loop = Packed([con], dtype).stacks(opts.problems, n)["loop"][0]
    D, w = con.weights.d_model, con.weights.loop[0]
    nonzero = np.flatnonzero(np.any([np.any(h.query != 0, 0) | np.any(h.key != 0, 0) for h in w.heads], 0))
    assert loop.v_heads is not None                          # the per-head core: its probe agreed
    read = np.arange(D)[loop.q.read]
    assert set(nonzero) <= set(read) and len(read) < D
    assert loop.fc2.w.shape[1] < D and loop.o.w.shape[1] < D          # fewer rows written than the width
    packed = sum(2 * b * m * k * nn for b, m, k, nn in loop.matmuls())
    rows = opts.problems * n
    H, k, r, F = len(w.heads), loop.q.w.shape[1] // len(w.heads), loop.o.w.shape[2] // len(w.heads), w.ffn.w1.shape[0]
    dense = 2 * rows * (D * H * k * 2 + D * H * r + H * r * D + 2 * D * F) + 2 * rows * n * H * (k + r)
    assert packed < dense / 2


def test_packed_needs_constructions_of_one_structure():
    algo, p, step, scores, n = _setup("gd")
    with pytest.raises(ValueError, match="cons is empty"):
        Packed([], "float64")
    a = algo.build(SMALL, step, schedule_temps(1e-2, "odd", n, scores), "odd")
    b = registry.get("newton").build(SMALL, step, schedule_temps(1e-2, "odd", n, scores | {"pre": 1.0, "post": 1.0}),
                                     "odd")
    with pytest.raises(ValueError, match="differ in structure"):
        Packed([a, b], "float64")


def test_a_non_finite_stream_marks_the_problem_diverged():
    """An inf in the prompt reaches the stream: the model's products turn it NaN everywhere; the packed
    run marks that problem's whole trajectory NaN (the sweep's "diverged"), and no other problem's."""
    algo, p, step, scores, n = _setup("gd")
    x = p.x.copy()
    x[1, 0, 0] = np.inf
    bad = dataclasses.replace(p, x=x)
    con = algo.build(SMALL, step, schedule_temps(1e-2, "odd", n, scores), "odd")
    got = emulate_many([con], bad, 2, torch.float64)[0]
    assert np.isnan(got.iterates[1]).all() and np.isnan(got.predictions[1, -1]).all()
    np.testing.assert_array_equal(got.iterates[0], emulate(con, bad, 2, every_prediction=False).iterates[0])


def _same_runs(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.iterates, w.iterates)
        np.testing.assert_array_equal(g.predictions, w.predictions)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunks_of_any_size_and_a_shared_pool_give_the_models_numbers(dtype):
    """Five problems in 1, 2 (3 + 2) and 3 chunks, on the run's own threads or on a shared open
    ChunkPool: every split is the model's run bit for bit (problems never interact in Eq. 1)."""
    opts = dataclasses.replace(SMALL, problems=5)
    algo, p, step, scores, n = _setup("newton", opts)
    con = algo.build(opts, step, schedule_temps(1e-3, "odd+mirror", n, scores), "odd+mirror")
    want = [emulate(con, p, 3, dtype, every_prediction=False)]
    for workers in (1, 2, 3):
        _same_runs(Packed([con], dtype).run(p, 3, workers=workers), want)
    threads = torch.get_num_threads()
    with ChunkPool(2) as pool:
        assert torch.get_num_threads() == 1                 # one intra-op thread per chunk thread
        _same_runs(emulate_many([con], p, 3, dtype, pool=pool), want)
    assert torch.get_num_threads() == threads              # restored


def test_bad_workers_and_a_closed_pool_are_refused():
    algo, p, step, scores, n = _setup("gd")
    con = algo.build(SMALL, step, schedule_temps(1e-2, "odd", n, scores), "odd")
    with pytest.raises(ValueError, match=r"workers=0 is invalid: expected an integer >= 1"):
        Packed([con], "float64").run(p, 1, workers=0)
    with pytest.raises(ValueError, match=r"workers=1.5 is invalid"):
        ChunkPool(1.5)
    with pytest.raises(RuntimeError, match="not open"):
        ChunkPool(2).submit(print)


def test_the_joint_core_where_the_per_head_probe_disagrees(monkeypatch):
    """Where the per-head core's probe disagrees (another CPU's kernels may), the layer falls back to
    the model's own 4-D attention: still the model's numbers, bit for bit."""
    import verify.packed as packed_mod
    monkeypatch.setattr(packed_mod, "_core_agrees", lambda *a, **k: False)
    algo, p, step, scores, n = _setup("newton")
    for variant in ("odd+mirror", "richardson4"):
        con = algo.build(SMALL, step, schedule_temps(1e-3, variant, n, scores), variant)
        pk = Packed([con], "float64")
        assert all(L.v_heads is None for s in pk.stacks(2, n).values() for L in s if L.H)
        _same_runs(pk.run(p, 3), [emulate(con, p, 3, "float64", every_prediction=False)])


def test_the_sweep_does_not_depend_on_the_thread_count():
    """Two groups side by side on two threads (the default here), or one after the other on one: the
    same rows, bit for bit, with every T-loop bound resolved to a float."""
    algo = registry.get("gd")
    args = (algo, SMALL, 3, ["odd", "odd+mirror"], ["float64", "float32"], "cpu", [1e-1, 1e-2, 1e-4])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, two = run_sweep(*args)
        torch.set_num_threads(1)
        _, one = run_sweep(*args)
    finally:
        torch.set_num_threads(threads)
    assert _same_rows(two, one)
    assert all(isinstance(r.bound_T, float) for r in two)
    seen = [k for i, k in enumerate((r.dtype, r.variant) for r in two) if i == 0 or k != (two[i - 1].dtype, two[i - 1].variant)]
    assert seen == [(d, v) for d in ("float64", "float32") for v in ("odd", "odd+mirror")]   # group order kept


def test_a_wide_output_map_gives_the_same_rows_on_any_thread_count():
    """richardson10 Newton at d = 20: W_O multiplies 10 heads x 20 values (K = 200), long enough that
    this CPU's MKL splits the sum across two threads. The sweep's rows are the one-thread arithmetic on
    every path and thread count: packed on two threads == the model row by row == packed on one."""
    opts = Options(N=24, d=20, problems=3, seed=2)
    algo = registry.get("newton")
    args = (algo, opts, 2, ["richardson10"], ["float64"], "cpu", [1e-1, 1e-3])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, two = run_sweep(*args)
        _, model = run_sweep(*args, packed=False)
        torch.set_num_threads(1)
        _, one = run_sweep(*args)
    finally:
        torch.set_num_threads(threads)
    assert any(r.status == "ok" for r in two)
    assert _same_rows(two, model) and _same_rows(two, one)
