"""The temperature sweep: compile, emulate, compare with numpy, for every (dtype, variant, theta).

One schedule drives both temperatures of every linearised head group g:
    theta  = the largest data score c * |a| of the group (the same for all groups),
    c_g    = theta / a_max(g)                  (a_max from the data, see ``Algorithm.score_bounds``),
    C      = ln(20 n) + P ln(1/theta)          (sink variants; P the variant's order: leakage 2n e^{-C}
                                                kept ~10x below the truncation theta^P); 0 for mirror.
Falling theta first lowers the truncation error (theta^P), then the rounding term u C / theta takes
over (the floor), and finally e^C / c leaves the dtype's range (overflow). The automatic choice
(``constructions.linearise.choose_temperature``, per group) is run as one more row, marked ``auto``.
The unit roundoff and overflow limit come from ``PRECISIONS`` (float64, float32, bfloat16, tf32).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch

from constructions.linearise import Temperature, choose_temperature, error_bound, is_mirror, order

from . import progress
from .interface import Algorithm, Options
from .emulate import emulate, relative_error
from .packed import ChunkPool, emulate_many, intra_op_threads, supported


@dataclass(frozen=True)
class Precision:
    """One arithmetic the emulation can run in: the storage dtype, the unit roundoff u of the
    matmuls and softmax (which sets the rounding floor), the log of the largest finite value (which
    sets the overflow of e^C / c or n / c), whether matmuls run in TF32, the devices that have it, and
    a wider dtype for the attention sublayers, if any. The ``+attn`` entries split the floor: the
    stream (residual adds, FFNs, the stored weights) rounds in the storage dtype, the attention in the
    wider one; u is the storage dtype's (the bounds take it for both parts, which is conservative for
    the attention), the automatic temperature the attention's (``attention_roundoff``)."""
    storage: torch.dtype
    u: float
    log_max: float
    tf32: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    attention: str | None = None    # the attention sublayers run in this wider dtype (``LayerConfig``)


_F32_LOG_MAX = math.log(float(torch.finfo(torch.float32).max))
PRECISIONS: dict[str, Precision] = {
    "float64": Precision(torch.float64, 2.0 ** -53, math.log(float(torch.finfo(torch.float64).max))),
    "float32": Precision(torch.float32, 2.0 ** -24, _F32_LOG_MAX),
    # bfloat16: 8 significand bits (u = 2^-8) but float32's exponent range
    "bfloat16": Precision(torch.bfloat16, 2.0 ** -8, math.log(float(torch.finfo(torch.bfloat16).max))),
    # TF32: float32 storage, matmul inputs rounded to 10 explicit mantissa bits (u = 2^-11); CUDA only
    "tf32": Precision(torch.float32, 2.0 ** -11, _F32_LOG_MAX, tf32=True, devices=("cuda",)),
    # float32 everywhere except the attention (float64): what the softmax's rounding costs
    "float32+attn64": Precision(torch.float32, 2.0 ** -24, _F32_LOG_MAX, attention="float64"),
    # bfloat16 storage, attention in float32 (the usual mixed-precision upcast)
    "bfloat16+attn32": Precision(torch.bfloat16, 2.0 ** -8, math.log(float(torch.finfo(torch.bfloat16).max)),
                                 attention="float32"),
}
DTYPES = {name: p.storage for name, p in PRECISIONS.items()}   # storage dtype per name
_BY_TORCH = {p.storage: p for name, p in PRECISIONS.items() if not p.tf32 and p.attention is None}
THETAS = [10.0 ** -k for k in range(13)] + [1e-14, 1e-16, 1e-20, 1e-24, 1e-32, 1e-48, 1e-64,
                                            1e-96, 1e-128, 1e-160, 1e-192, 1e-256]
LOST = 0.5   # a relative error above this means the emulation no longer tracks the algorithm


@dataclass
class Row:
    algorithm: str
    variant: str
    dtype: str
    device: str
    theta: float
    C: float                  # sink score of the loop group
    c: float                  # data-score scale of the loop group
    error_iterate: float      # max over problems, relative, final loop, against float64 numpy
    error_prediction: float   # max over problems, relative, final prediction
    median_iterate: float
    median_prediction: float
    growth: float             # max error of the iterate after T loops / after 1 loop
    bound_step: float         # the linearisation bound for one loop-group head output, relative
    status: str               # ok | lost (error > 0.5: the signal sank below rounding) | overflow | diverged
                              # (inf/NaN); copy: ok | lost | over-bound | unzeroed (docs/verify-cli.md)
    auto: bool = False
    bound_T: float = math.nan   # T-loop bound on the final prediction, relative, max over problems (nan: none)


def precision(dtype: str | torch.dtype) -> Precision:
    """The table entry for a name (``PRECISIONS``) or a torch dtype (its plain, non-TF32 entry)."""
    if isinstance(dtype, str):
        return PRECISIONS[dtype]
    if dtype in _BY_TORCH:
        return _BY_TORCH[dtype]
    raise KeyError(f"no precision entry for {dtype}")


def unit_roundoff(dtype: str | torch.dtype) -> float:
    return precision(dtype).u


def attention_roundoff(dtype: str | torch.dtype) -> float:
    """u of the arithmetic the attention runs in (the linearisation's rounding term): the storage
    dtype's, or the wider attention dtype's for the ``+attn`` entries."""
    p = precision(dtype)
    return p.u if p.attention is None else float(torch.finfo(getattr(torch, p.attention)).eps) / 2


def storage_name(dtype_name: str) -> str:
    """"float32+attn64" -> "float32": the name of the arithmetic the residual stream rounds in."""
    return dtype_name.split("+")[0]


def log_max(dtype: str | torch.dtype) -> float:
    return precision(dtype).log_max


def available(name: str, device: str) -> bool:
    return device in PRECISIONS[name].devices


def schedule_temps(theta: float, variant: str, n: int, scores: dict[str, float]) -> dict[str, Temperature]:
    C = 0.0 if is_mirror(variant) else math.log(20 * n) + order(variant) * math.log(1.0 / theta)
    return {g: Temperature(C, theta / a) for g, a in scores.items()}


def auto_temps(variant: str, n: int, scores: dict[str, float], dtype: str | torch.dtype) -> dict[str, Temperature]:
    margin = 12.0  # e^12 headroom for the data values and the n-term sums that multiply e^C / c
    return {g: choose_temperature(variant, n, a, attention_roundoff(dtype), log_max(dtype) - margin)
            for g, a in scores.items()}


def weights_overflow(con, dtype: str | torch.dtype) -> bool:
    """True when some constructed weight (e^C / c times a value map) is beyond the dtype's range."""
    big = float(torch.finfo(precision(dtype).storage).max)
    w = con.weights
    return any(np.abs(h.value).max() >= big or not np.isfinite(h.value).all()
               for layer in w.pre + w.loop + w.post for h in layer.heads)


def _row(algo: Algorithm, opts: Options, problem, ref, step, temps, variant, dtype_name, device,
         iters, theta, auto, con=None, emu=None, side=None) -> Row:
    """One row. ``con``, ``emu``: the construction and its emulation where the caller has them
    (the packed sweep); otherwise built and run here (``emulate.emulate``, the model itself).
    ``side``: an executor that forms the T-loop bound (which no decision of the sweep reads) beside
    the next rows; the row's ``bound_T`` is then a future, resolved by ``run_sweep`` before it returns."""
    progress.row(f"{dtype_name} {variant} theta={theta:.0e}{' auto' if auto else ''}")
    if con is None:
        with np.errstate(over="ignore", invalid="ignore"):
            con = algo.build(opts, step, temps, variant)
    loop = temps.get("loop", next(iter(temps.values())))
    n = algo.n_tokens(opts)
    with np.errstate(over="ignore", invalid="ignore"):      # a bound beyond float64 is inf, said so
        bound = error_bound(variant, loop, n, 1.0, 1.0, unit_roundoff(dtype_name))["total"]
    base = dict(algorithm=algo.name, variant=variant, dtype=dtype_name, device=device, theta=theta,
                C=loop.C, c=loop.c, bound_step=bound, auto=auto)
    nan = float("nan")
    blank = dict(error_iterate=nan, error_prediction=nan, median_iterate=nan, median_prediction=nan, growth=nan)
    if weights_overflow(con, dtype_name):
        return Row(**base, **blank, status="overflow")
    if emu is None:
        emu = emulate(con, problem, iters, dtype_name, device, every_prediction=False)
    if not (np.isfinite(emu.iterates).all() and np.isfinite(emu.predictions[:, -1]).all()):
        return Row(**base, **blank, status="diverged")
    e_last = relative_error(emu.iterates[:, iters], ref.iterates[:, iters])     # the loops the row reports
    e_first = relative_error(emu.iterates[:, min(1, iters)], ref.iterates[:, min(1, iters)])
    e_pred = relative_error(emu.predictions[:, -1], ref.predictions[:, -1])
    growth = float(e_last.max() / max(e_first.max(), 1e-300))
    worst = max(float(e_last.max()), float(e_pred.max()))
    args = (algo, problem, ref, step, iters, temps, variant, dtype_name)
    return Row(**base, error_iterate=float(e_last.max()), error_prediction=float(e_pred.max()),
               median_iterate=float(np.median(e_last)), median_prediction=float(np.median(e_pred)),
               growth=growth, status="ok" if worst <= LOST else "lost",
               bound_T=_relative_bound(*args) if side is None else side.submit(_relative_bound, *args))


def _relative_bound(algo: Algorithm, problem, ref, step, iters, temps, variant, dtype_name) -> float:
    """``algo.emulation_bound`` on the final prediction over |reference prediction|, max over problems."""
    if algo.emulation_bound is None:
        return math.nan
    n = 2 * problem.x.shape[1] + 2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        b = np.asarray(algo.emulation_bound(problem, ref, step, iters, temps, variant, n,
                                            unit_roundoff(dtype_name)), float).reshape(len(problem.x), -1)
        pred = ref.predictions[:, -1].reshape(len(problem.x), -1)
        s = np.abs(pred).max(axis=1)            # scaled first: tiny predictions must not underflow
        rel = (b.max(axis=1) / s) / np.linalg.norm(pred / s[:, None], axis=1)
    return float(np.where(np.isnan(rel), np.inf, rel).max())


def arithmetic_floor(algo: Algorithm, problem, ref, step, iters: int, dtype_name: str) -> dict | None:
    """The algorithm itself (numpy) in the row's arithmetic, against the float64 reference: float32 in
    float32; float64 against np.longdouble where that is wider (x86 80-bit). None where numpy has no
    such dtype (bfloat16, tf32) or no wider type. The emulation cannot be expected below this floor."""
    if algo.reference_in is None:
        return None
    dtype_name = storage_name(dtype_name)     # the +attn entries: the algorithm in the storage dtype
    if dtype_name == "float32":
        run, against = algo.reference_in(problem, iters, step, np.float32), ref
    elif dtype_name == "float64" and np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        run, against = ref, algo.reference_in(problem, iters, step, np.longdouble)
    else:
        return None
    f = lambda a: np.asarray(a, np.float64)
    e_pred = relative_error(f(run.predictions[:, -1]), f(against.predictions[:, -1]))
    e_it = relative_error(f(run.iterates[:, -1]), f(against.iterates[:, -1]))
    out = {"prediction_max": float(e_pred.max()), "prediction_median": float(np.median(e_pred)),
           "iterate_max": float(e_it.max())}
    if dtype_name == "float32":   # the part no float32 computation can avoid: rounding the prompt itself
        r = lambda a: np.asarray(a).astype(np.float32).astype(np.float64)
        rounded = type(problem)(*(r(getattr(problem, k)) for k in ("x", "y", "x_test", "y_test")))
        inp = algo.reference_in(rounded, iters, float(np.float32(step)), np.float64)
        out["input_rounding_max"] = float(relative_error(inp.predictions[:, -1], ref.predictions[:, -1]).max())
    return out


def _sweep_one(run_row, build_overflows, thetas: list[float], refine: bool = True) -> list[Row]:
    """Run rows from high to low theta until the floor is clearly passed (two rows in a row at least
    10x above the best error so far, or two rows that lost the signal; with no good row yet (a coarse
    dtype such as bfloat16), two rows whose output has sunk to ~0), and find the overflow point by
    building weights only, without running them; then, with ``refine``, search the floor on a finer
    grid (theta x 10^(+-1/2), then x 10^(+-1/4) around the better one, for the prediction and then for
    the iterate: the best of a decade grid can sit several times above the floor). Rows come back in
    order of falling theta."""
    rows = _coarse(run_row, build_overflows, thetas)
    if refine:
        rows = _refine(run_row, rows)
    return sorted(rows, key=lambda r: -r.theta if math.isfinite(r.theta) else math.inf)


def _refine(run_row, rows: list[Row]) -> list[Row]:
    """Around the best prediction, and around the best iterate where that is another row."""
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        return rows
    for metric in ("error_prediction", "error_iterate"):
        ok = [r for r in rows if r.status == "ok"]
        best = min(ok, key=lambda r: getattr(r, metric))
        if metric == "error_iterate" and best is min(ok, key=lambda r: r.error_prediction):
            break
        done = {r.theta for r in rows}
        for step in (10 ** 0.5, 10 ** 0.25):
            new = [t for t in (best.theta * step, best.theta / step)
                   if not any(math.isclose(t, d, rel_tol=1e-9) for d in done)]
            tried = [run_row(t) for t in new]
            rows += tried
            done |= {r.theta for r in tried}
            best = min([best] + [r for r in tried if r.status == "ok"], key=lambda r: getattr(r, metric))
    return rows


def _coarse(run_row, build_overflows, thetas: list[float]) -> list[Row]:
    rows: list[Row] = []
    bad = 0
    for i, theta in enumerate(thetas):
        row = run_row(theta)
        rows.append(row)
        if row.status == "overflow":
            return rows
        ok = [r.error_prediction for r in rows if r.status == "ok"]
        past_floor = row.status == "ok" and len(ok) > 1 and row.error_prediction >= 10 * min(ok[:-1])
        bad = bad + 1 if ((row.status != "ok" and ok) or past_floor) else 0
        if not ok and len(rows) >= 2 and all(r.status == "lost" and abs(r.error_prediction - 1.0) < 1e-3
                                             for r in rows[-2:]):
            bad = 2   # no row has tracked the algorithm and the output is now ~0: the signal is gone
        if bad == 2:
            for theta2 in thetas[i + 1:]:
                if build_overflows(theta2):
                    rows.append(run_row(theta2))
                    break
            return rows
    return rows


def run_sweep(algo: Algorithm, opts: Options, iters: int, variants: list[str], dtypes: list[str],
              device: str, thetas: list[float] | None = None, packed: bool = True) -> tuple[dict, list[Row]]:
    """Returns (configuration, rows). Problems outside the construction's assumptions are dropped
    from the comparison and listed in the configuration under ``excluded``. ``packed``: run the rows
    with ``verify.packed`` (zeros skipped, the problems in one chunk per core), else each row on the
    model (``emulate.emulate``): the same rows, bit for bit (docs/verifier-speed.md)."""
    rng = np.random.default_rng(opts.seed)
    problem = algo.draw(rng, opts)
    step = opts.step if opts.step is not None else algo.choose_step(problem)
    why = algo.violations(problem, opts, step)
    keep = why == ""
    excluded = {int(i): str(why[i]) for i in np.flatnonzero(~keep)}
    config = {"algorithm": algo.name, "N": opts.N, "d": opts.d, "m": opts.m, "iters": iters,
              "problems": opts.problems, "seed": opts.seed, "device": device, "dtypes": dtypes,
              "variants": variants, algo.step_name: step, "x_bound": opts.x_bound,
              "register_bound": opts.register_bound, "excluded": excluded, "valid_problems": int(keep.sum())}
    for k in algo.ignores:
        config.pop(k, None)
    config.update(opts.extra)
    if not keep.any():
        return config, []
    ref = algo.reference(problem, iters, step)
    big = np.abs(ref.iterates).reshape(len(keep), -1).max(axis=1) > opts.register_bound
    for i in np.flatnonzero(big & keep):
        excluded[int(i)] = f"a register exceeds register_bound={opts.register_bound:g} (the gated FFNs assume it)"
    keep &= ~big
    config["valid_problems"] = int(keep.sum())
    if not keep.any():
        return config, []
    problem = type(problem)(*(getattr(problem, f)[keep] for f in ("x", "y", "x_test", "y_test")))
    ref = type(ref)(ref.iterates[keep], ref.predictions[keep])
    scores = algo.score_bounds(problem, step)
    config["score_bounds"] = scores
    # the arithmetic floors and the T-loop bounds decide nothing in the sweep: a side thread forms
    # them while the rows run (numpy releases the GIL in its loops)
    side = ThreadPoolExecutor(1)
    try:
        floors = side.submit(lambda: {storage_name(d): arithmetic_floor(algo, problem, ref, step, iters, d)
                                      for d in dtypes})
        rows = _rows(algo, opts, problem, ref, step, scores, iters, variants, dtypes, device, thetas, packed, side)
        for r in rows:
            if isinstance(r.bound_T, Future):
                r.bound_T = r.bound_T.result()
        floors = floors.result()
    except BaseException:              # an error or Ctrl-C: drop the queued bounds, stop at once
        side.shutdown(wait=True, cancel_futures=True)
        raise
    side.shutdown()
    if any(v is not None for v in floors.values()):
        config["arithmetic_floor"] = {d: v for d, v in floors.items() if v is not None}
    return config, rows


def _rows(algo, opts, problem, ref, step, scores, iters, variants, dtypes, device, thetas, packed, side) -> list[Row]:
    """Every (dtype, variant) group's rows, in that order. Packed on a CPU with several threads, the
    groups run two (``workers``) at a time, their rows' problem chunks on one shared ``ChunkPool``:
    one group's Python (building, packing, its statistics) runs while the other's chunks compute, and
    a group that runs alone still has every core.

    Every row is the model's arithmetic with one intra-op thread, on every path and core count (the
    row-by-row path on the model, ``packed=False``, runs with one thread too). The model's own dense
    products do not give the same bits on one thread and on two: this CPU's MKL splits the inner
    dimension of a product across threads once it is long enough (W_O of 10 heads, K = 200), so the
    float64 floor rows of richardson10/12 used to change with OMP_NUM_THREADS. Now they do not."""
    n = algo.n_tokens(opts)
    groups = [(d, v) for d in dtypes for v in variants]
    progress.plan(len(groups), len(thetas or THETAS) + 5)   # + refinement 4, auto 1
    workers = torch.get_num_threads() if device == "cpu" else 1
    if not packed or workers == 1:
        with intra_op_threads(1):             # the same arithmetic as the packed rows' (see the doc)
            return [r for d, v in groups for r in _group(algo, opts, problem, ref, step, scores, iters, v, d,
                                                          device, thetas, packed, side, n, None)]
    stop = threading.Event()
    with ChunkPool(workers) as pool, ThreadPoolExecutor(min(workers, len(groups))) as run:
        futures = [run.submit(_group, algo, opts, problem, ref, step, scores, iters, v, d, device, thetas, packed,
                              side, n, pool, stop) for d, v in groups]
        try:
            return [r for f in futures for r in f.result()]
        except BaseException:          # an error or Ctrl-C: the groups stop before their next row
            stop.set()
            for f in futures:
                f.cancel()
            raise


class _Stopped(Exception):
    """A group told to stop (another group failed, or Ctrl-C) before its next row."""


def _group(algo, opts, problem, ref, step, scores, iters, variant, dtype_name, device, thetas, packed, side, n,
           pool, stop=None) -> list[Row]:
    """One (dtype, variant) group: the coarse grid, the refinement, the automatic temperature."""
    def row(theta, temps, auto=False):
        """Build and run one row: packed where the construction allows it, else on the model."""
        if stop is not None and stop.is_set():
            raise _Stopped()
        con = _build(algo, opts, step, temps, variant)
        emu = None
        if packed and supported(con) and not weights_overflow(con, dtype_name):
            emu = emulate_many([con], problem, iters, dtype_name, device, pool)[0]
        return _row(algo, opts, problem, ref, step, temps, variant, dtype_name, device, iters, theta,
                    auto, con, emu, side)

    def overflows(theta):
        return weights_overflow(_build(algo, opts, step, schedule_temps(theta, variant, n, scores), variant),
                                dtype_name)

    rows = _sweep_one(lambda theta: row(theta, schedule_temps(theta, variant, n, scores)), overflows,
                      thetas or THETAS)
    try:
        temps = auto_temps(variant, n, scores, dtype_name)
    except ValueError:   # no (C, c) keeps e^C/c (or n/c) inside the dtype's range
        nan = float("nan")
        rows.append(Row(algo.name, variant, dtype_name, device, nan, nan, nan, nan, nan, nan, nan,
                        nan, nan, "overflow", True))
    else:
        loop = temps.get("loop", next(iter(temps.values())))
        rows.append(row(loop.c * scores.get("loop", next(iter(scores.values()))), temps, auto=True))
    progress.group_done()
    return rows


def _build(algo: Algorithm, opts: Options, step, temps, variant):
    with np.errstate(over="ignore", invalid="ignore"):
        return algo.build(opts, step, temps, variant)


def rows_as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
