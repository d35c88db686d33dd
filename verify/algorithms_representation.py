"""Algorithms for Lemma A.3 and Theorems 3.1, 3.2: ``copy``, ``representation``, ``ar`` (``registry.BUILTINS``).

    representation   y = A Phi*(x), Phi* = ``tasks.representation_mlp(d)`` (3 leaky layers, R^d -> R^d);
                     reference: numpy GD on (Phi*(x_i), y_i), queried at Phi*(x_test)
    ar               x_{t+1} = A Phi*(x_{t+1-q..t}) + N(0, I) noise, Phi* = ``tasks.ar_mlp(q, d)``;
                     reference: numpy GD on ``tasks.ar_regression`` (windows -> next value)
    copy             Lemma A.3 alone: the copy block's windows against numpy windows, swept over beta

An AR problem rides in a ``Regression`` so that the sweep, the emulator and the filters serve it
unchanged: x = the prompt x_1 .. x_N (B, N, d), y = the same values (the labels are the sequence
itself), x_test = the query window [x_{N-q+1}, ..., x_N] (B, q d; it carries q), y_test = x_{N+1}.
A copy problem is the same with x_test = 0 (B, q d).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from algoformer import tasks
from algoformer.tasks import Regression
from constructions.autoregressive import ar_construction
from constructions.copy import copy_construction, copy_error_bound, default_beta, window_reference
from constructions.representation import representation_construction

from . import progress
from .interface import Algorithm, Options
from .interface import bound_violations as _bound_violations
from .bounds import gd_emulation_bound  # noqa: F401  (re-exported: its home was here)
from .references import Trajectory, gd_reference

AR_NOISE = 1.0   # the paper's innovations N(0, I)


@functools.lru_cache(maxsize=8)
def representation_phi(d: int) -> tasks.MLP:
    return tasks.representation_mlp(d)


@functools.lru_cache(maxsize=8)
def ar_phi(q: int, d: int) -> tasks.MLP:
    return tasks.ar_mlp(q, d)


def ar_problem(seq: np.ndarray, q: int) -> Regression:
    """seq (B, N + 1, d) -> the Regression-shaped AR problem of the module docstring."""
    B, n1, d = seq.shape
    N = n1 - 1
    return Regression(seq[:, :N], seq[:, :N], seq[:, N - q:N].reshape(B, q * d), seq[:, N])


def ar_q(p: Regression) -> int:
    return p.x_test.shape[1] // p.x.shape[2]


def features(p: Regression, kind: str) -> Regression:
    """The regression the GD loop solves: (Phi*(x_i), y_i) and Phi*(x_test)."""
    if kind == "representation":
        phi = representation_phi(p.x.shape[2])
        return Regression(phi(p.x), p.y, phi(p.x_test), p.y_test)
    q = ar_q(p)
    phi = ar_phi(q, p.x.shape[2])
    r = tasks.ar_regression(np.concatenate([p.x, p.y_test[:, None]], axis=1), q)
    return Regression(phi(r.x), r.y, phi(r.x_test), r.y_test)


def _lmax(f: Regression) -> np.ndarray:
    return np.linalg.eigvalsh(np.einsum("bni,bnj->bij", f.x, f.x) / f.x.shape[1])[:, -1]


def _violations(kind: str):
    def check(p: Regression, opts: Options, eta: float) -> np.ndarray:
        v = _bound_violations(p, opts)
        f = features(p, kind)
        big = np.maximum(np.abs(f.x).max(axis=(1, 2)), np.abs(f.x_test).max(axis=1)) > opts.x_bound
        v = np.where((v == "") & big, np.char.add("max|Phi*(x)| > x_bound=", str(opts.x_bound)), v)
        return np.where((v == "") & (eta >= 2.0 / _lmax(f)), "eta >= 2/lambda_max(Phi^T Phi/n): GD diverges", v)
    return check


def _scores(kind: str):
    def bounds(p: Regression, eta: float) -> dict[str, float]:
        f = features(p, kind)
        pts = np.concatenate([f.x, f.x_test[:, None]], axis=1)
        return {"loop": float(np.abs(np.einsum("bni,bmi->bnm", pts, f.x)).max() / f.x.shape[1])}
    return bounds


def _gd_on_features(kind: str):
    def reference(p: Regression, iters: int, eta: float) -> Trajectory:
        return gd_reference(features(p, kind), iters, eta)
    return reference


REPRESENTATION = Algorithm(
    name="representation", summary="regression with representation: Phi* in the FFNs, GD on Phi*(x) (Thm 3.1)",
    step_name="eta",
    draw=lambda rng, o: tasks.representation_regression(rng, o.problems, representation_phi(o.d), o.N, o.d, o.m),
    choose_step=lambda p: float(1.0 / _lmax(features(p, "representation")).max()),
    violations=_violations("representation"),
    score_bounds=_scores("representation"),
    build=lambda o, eta, temps, variant: representation_construction(
        representation_phi(o.d), o.N, eta, temps["loop"], o.m, variant, o.x_bound, seed=o.seed,
        register_bound=o.register_bound),
    reference=_gd_on_features("representation"),
)

AR = Algorithm(
    name="ar", summary="AR(q) with representation: copy block, Phi*, GD, predict x_{N+1} (Thm 3.2)",
    step_name="eta",
    draw=lambda rng, o: ar_problem(tasks.ar_sequence(rng, o.problems, ar_phi(o.q, o.d), o.q, o.N, o.d,
                                                     AR_NOISE)[0], o.q),
    choose_step=lambda p: float(1.0 / _lmax(features(p, "ar")).max()),
    violations=_violations("ar"),
    score_bounds=_scores("ar"),
    build=lambda o, eta, temps, variant: ar_construction(
        ar_phi(o.q, o.d), o.q, o.N, eta, temps["loop"], variant, o.x_bound, seed=o.seed,
        register_bound=o.register_bound),
    reference=_gd_on_features("ar"),
    options=("q",),
)


# -- Lemma A.3 alone: a sweep over beta ---------------------------------------------------------
def _copy_draw(rng: np.random.Generator, o: Options) -> Regression:
    x = rng.standard_normal((o.problems, o.N, o.d))
    return Regression(x, x, np.zeros((o.problems, o.q * o.d)), np.zeros((o.problems, o.d)))


def _copy_reference(p: Regression, iters: int, beta: float) -> Trajectory:
    w = window_reference(p.x, ar_q(p))
    return Trajectory(w[:, None], w[:, None])


COPY = Algorithm(
    name="copy", summary="q-head copying block on shifted quasi-orthogonal embeddings (Lemma A.3), swept over beta",
    step_name="beta",
    draw=_copy_draw,
    choose_step=lambda p: math.nan,                 # no single default: the sweep runs a beta grid
    violations=lambda p, o, beta: _bound_violations(p, o),
    score_bounds=lambda p, beta: {},
    build=lambda o, beta, temps, variant: copy_construction(o.d, o.N, o.q, beta, o.x_bound, seed=o.seed),
    reference=_copy_reference,
    options=("q",),
)


def _copy_errors(con, p: Regression, dtype, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem, relative to max|x|: raw copy error (slots with an earlier token, after the heads),
    block error (every slot, after the zeroing FFN), max |empty slot| after the block. The numpy
    windows are formed from x as the dtype holds it (float32 rounding of the input is not copy error)."""
    from constructions.bridge import build_model
    from .emulate import attention_dtype, resolve_dtype
    upcast = attention_dtype(dtype)
    dtype = resolve_dtype(dtype)[0]
    model = build_model(con.weights, dtype=dtype, device=device, attention_dtype=upcast)
    tokens = torch.from_numpy(con.encode(p.x)).to(dtype=dtype, device=device)
    with torch.no_grad():
        raw = model.pre[0](tokens)
        out = model.pre[1](raw)
    lay, q, d = con.layout, con.q, p.x.shape[2]
    read = lambda h: h[:, :, lay["win"]].to(torch.float64).cpu().numpy()
    x_in = tokens[:, :p.x.shape[1], lay["xt"]].to(torch.float64).cpu().numpy()   # x as the dtype holds it
    want = window_reference(x_in, q)                                         # (B, N, q d)
    t = np.arange(p.x.shape[1])[:, None]
    i = q - np.arange(q * d)[None, :] // d                                   # shift of each window row
    has_prev = t >= i                                                        # (N, q d)
    scale = np.abs(p.x).max(axis=(1, 2))[:, None, None]
    raw_err = np.where(has_prev, np.abs(read(raw) - want), 0.0) / scale
    blk = read(out)
    blk_err = np.abs(blk - want) / scale
    empty = np.where(has_prev, 0.0, np.abs(blk)).max(axis=(1, 2))
    return raw_err.max(axis=(1, 2)), blk_err.max(axis=(1, 2)), empty


def copy_sweep(algo: Algorithm, opts: Options, iters: int, variants: list[str], dtypes: list[str],
               device: str) -> tuple[dict, list]:
    """Rows over beta = m 2^k (scores stay exact): theta = 1/beta (the softmax temperature),
    C = beta margin (the exponent of the leak), c = margin,
    error_iterate = raw copy error, error_prediction = block error (both relative to max|x|),
    bound_step = 2 (n-1) e^{-beta margin} (``copy_error_bound`` per unit max|x|)."""
    from .sweep import DTYPES, Row, unit_roundoff
    rng = np.random.default_rng(opts.seed)
    problem = algo.draw(rng, opts)
    why = algo.violations(problem, opts, 0.0)
    keep = why == ""
    con0 = algo.build(opts, None, {}, "")
    m, margin, n = con0.pos.shape[1], con0.assumptions["margin"], opts.N
    exact_beta = default_beta(m, 0.1)
    if opts.step is not None:
        betas = [opts.step]
    else:
        betas = [m * 2.0 ** k for k in range(-8, 20) if m * 2.0 ** k * margin < 4000]
        betas = sorted(set(betas) | {exact_beta})
    config = {"algorithm": algo.name, "N": opts.N, "d": opts.d, "q": opts.q, "problems": opts.problems,
              "seed": opts.seed, "device": device, "dtypes": dtypes, "pos_dim": m, "margin": margin,
              "exact_beta": exact_beta, "x_bound": opts.x_bound,
              "excluded": {int(k): str(why[k]) for k in np.flatnonzero(~keep)}, "valid_problems": int(keep.sum())}
    if not keep.any():
        return config, []
    problem = Regression(*(getattr(problem, f)[keep] for f in ("x", "y", "x_test", "y_test")))
    rows = []
    progress.plan(len(dtypes), len(betas))
    for dtype_name in dtypes:
        u = unit_roundoff(DTYPES[dtype_name])
        big = float(torch.finfo(DTYPES[dtype_name]).max)
        for beta in betas:
            progress.row(f"{dtype_name} beta={beta:.3g}")
            con = algo.build(opts, beta, {}, "")
            bound = copy_error_bound(n, beta, margin, 1.0)
            base = dict(algorithm=algo.name, variant="copy", dtype=dtype_name, device=device, theta=1.0 / beta,
                        C=beta * margin, c=margin, growth=math.nan, bound_step=bound, auto=beta == exact_beta)
            if not all(np.isfinite(a).all() and np.abs(a).max(initial=0) < big for layer in con.weights.pre
                       for h in layer.heads for a in (h.query, h.key, h.value)):
                rows.append(Row(**base, error_iterate=math.nan, error_prediction=math.nan, median_iterate=math.nan,
                                median_prediction=math.nan, status="overflow"))
                continue
            raw, blk, empty = _copy_errors(con, problem, dtype_name, device)
            rows.append(Row(**base, error_iterate=float(raw.max()), error_prediction=float(blk.max()),
                            median_iterate=float(np.median(raw)), median_prediction=float(np.median(blk)),
                            status=copy_status(raw, blk, empty, bound, n, u)))
        progress.group_done()
    return config, rows


def copy_status(raw: np.ndarray, blk: np.ndarray, empty: np.ndarray, bound: float, n: int, u: float) -> str:
    """diverged (inf/NaN) > over-bound (the raw error breaks Lemma A.3's bound plus (n+2) u rounding: a
    finding) > lost (block error above ``LOST``: the copied values are gone, whatever the bound
    allows at small beta) > unzeroed (an empty slot not exactly 0 after the FFN) > ok."""
    from .sweep import LOST
    if not (np.isfinite(raw).all() and np.isfinite(blk).all() and np.isfinite(empty).all()):
        return "diverged"
    if raw.max() > bound + (n + 2) * u:
        return "over-bound"
    if blk.max() > LOST:
        return "lost"
    return "unzeroed" if empty.max() > 0.0 else "ok"


def exp_underflow(dtype_name: str) -> float:
    """z beyond which exp(-z) rounds to 0 in the arithmetic the softmax runs in (the attention dtype of
    the +attn entries, else the storage dtype): -ln(half the smallest subnormal)."""
    from .sweep import PRECISIONS
    p = PRECISIONS[dtype_name]
    f = torch.finfo(getattr(torch, p.attention) if p.attention else p.storage)
    return -(math.log(f.smallest_normal) + math.log(f.eps) - math.log(2.0))


def copy_verdict(rows: list, n: int):
    """Per dtype one sentence: how many betas keep the bound, where the copy becomes exact, empty
    slots; the notes: the decay law, the underflow guarantee, the default beta, the lost betas."""
    from .report import Verdict
    from .sweep import unit_roundoff
    out = Verdict()
    N = (n - 2) // 2
    for dtype in dict.fromkeys(r.dtype for r in rows):
        rs = [r for r in rows if r.dtype == dtype]
        ran = [r for r in rs if r.status not in ("overflow", "diverged")]
        held = sum(r.error_iterate <= r.bound_step + (N + 2) * unit_roundoff(dtype) for r in ran)
        zeroed = all(r.status != "unzeroed" for r in rs)
        exact = [r for r in ran if r.error_iterate == 0.0 and r.error_prediction == 0.0]
        lost = [r for r in rs if r.status == "lost"]
        first = (f"is exactly 0 on these data from beta={1 / exact[0].theta:.3g} on" if exact
                 else "is never exactly 0 on this grid")
        broke = len(rs) - len(ran)
        if not ran:
            out.append(f"{dtype} copy: no beta could run: {rs[0].status} at every one (beta*margin up to "
                       f"{max(r.C for r in rs):.3g}; the weights carry beta).")
            continue
        out.append(f"{dtype} copy: the raw error is within its bound at {held} of {len(ran)} betas run"
                   f"{f' ({broke} overflowed or diverged)' if broke else ''} and {first}; empty slots are "
                   f"{'exactly 0' if zeroed else 'NOT zero'} after the FFN.")
        notes = ["the bound is 2(n-1) e^(-beta margin) max|x| + (n+2) u (Lemma A.3, rounding added)"]
        decay = [r for r in ran if 1e-12 < r.error_iterate < 1e-2]
        if len(decay) >= 2:
            slope = np.polyfit([r.C for r in decay], np.log([r.error_iterate for r in decay]), 1)[0]
            notes.append(f"the raw error falls as e^({slope:.2f} beta*margin)")
        if exact:
            notes.append(f"exact from beta*margin={exact[0].C:.3g}: the other weights fall below half an ulp of the "
                         f"copied value; guaranteed for every x only once exp(-beta*margin) underflows in "
                         f"{precision_of_softmax(dtype)}, beta*margin > {exp_underflow(dtype):.1f}")
        if lost:
            notes.append(f"lost (block error > 0.5) at {len(lost)} small beta(s), up to beta={1 / lost[-1].theta:.3g}, "
                         "where the bound allows it")
        auto = [r for r in rs if r.auto]
        if auto and math.isfinite(auto[0].error_prediction):
            notes.append(f"default beta={1 / auto[0].theta:.3g} (exact_pairing_beta) gives {auto[0].error_prediction:.2e}")
        if notes:
            out.notes.append(f"{dtype} copy: " + "; ".join(notes))
    return out


def precision_of_softmax(dtype_name: str) -> str:
    from .sweep import PRECISIONS
    p = PRECISIONS[dtype_name]
    return p.attention or str(p.storage).replace("torch.", "")


COPY = dataclasses.replace(COPY, sweep=copy_sweep, verdict=copy_verdict)


def ar_sweep(algo: Algorithm, opts: Options, iters: int, variants: list[str], dtypes: list[str],
             device: str) -> tuple[dict, list]:
    """``sweep.run_sweep``, with the AR sizes in the configuration (m = d outputs, q)."""
    from .sweep import run_sweep
    config, rows = run_sweep(algo, opts, iters, variants, dtypes, device)
    config["m"], config["q"] = opts.d, opts.q
    return config, rows


AR = dataclasses.replace(AR, sweep=ar_sweep)

