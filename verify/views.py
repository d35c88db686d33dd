"""Pictures of a constructed AlgoFormer at work on one problem (matplotlib, PNG).

    attention_figure(con, problem, iters, path)   softmax weights of every head, per layer and loop:
                                                  log10 for selection heads; for linearised heads
                                                  (nearly all weight on the sink, or nearly uniform
                                                  in the mirror scheme) the deviation from uniform,
                                                  where the data c a sits
    layout_figure(con, problem, iters, path)      the residual stream (layout rows x tokens) after
                                                  the read-in, TF_pre, selected loops and TF_post;
                                                  rows labelled by the layout, registers separated

Both read the model through ``run_with_cache`` (hook names in ``algoformer.model``), for problem
``index`` of the batch. ``cli_views`` is what ``python -m verify ... --show-attention PATH`` calls.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from algoformer.tasks import Regression
from constructions.bridge import build_model
from constructions.prompt import Construction

from .emulate import attention_dtype, resolve_dtype

MAX_PANELS = 6
LOG_FLOOR = -20.0     # attention weights below 1e-20 are drawn as 1e-20


def pick_loops(iters: int, k: int = MAX_PANELS) -> list[int]:
    """Up to k loop numbers from 1..iters, always the first and the last."""
    if iters <= k:
        return list(range(1, iters + 1))
    return sorted({int(round(t)) for t in np.linspace(1, iters, k)})


def token_labels(N: int, n: int | None = None) -> list[str]:
    """x1, y1, ..., xN, yN, xt, sink for the encoder prompt of ``constructions.prompt``; token numbers
    when the prompt has another length n (decoder, AR and chain-of-thought constructions)."""
    labels = [f"{k}{i}" for i in range(1, N + 1) for k in ("x", "y")] + ["xt", "sink"]
    return labels if n is None or n == len(labels) else [str(i) for i in range(n)]


def _labels(con: Construction, n: int) -> list[str]:
    """The construction's own ``token_roles`` where its class declares them, else ``token_labels``."""
    if type(con).token_roles is not Construction.token_roles and len(con.token_roles()) == n:
        return list(con.token_roles())
    return token_labels(con.pos.shape[0] - 1, n)


def run_cached(con: Construction, problem: Regression, iters: int, index: int = 0,
               dtype: torch.dtype | str = torch.float64) -> dict[str, np.ndarray]:
    """Every hooked tensor of problem ``index`` (batch axis dropped), as float64 numpy. ``dtype``: a
    torch dtype or a ``sweep.PRECISIONS`` name (its attention dtype included)."""
    upcast = attention_dtype(dtype)
    dtype = resolve_dtype(dtype)[0]
    model = build_model(con.weights, dtype=dtype, attention_dtype=upcast)
    one = slice(index, index + 1)
    tokens = torch.from_numpy(con.encode(problem.x[one], problem.y[one], problem.x_test[one])).to(dtype)
    _, cache = model.run_with_cache(tokens, iters)
    return {k: v[0].to(torch.float64).numpy() for k, v in cache.items()}


def attention_panels(con: Construction, cache: dict, iters: int, loops: list[int] | None = None):
    """[(row title, pattern (H, n, n), head names)] for pre layers, the chosen loops, post layers."""
    w = con.weights
    rows = [(f"pre.{i} {l.name}", cache[f"pre.{i}.hook_pattern"], [h.name for h in l.heads])
            for i, l in enumerate(w.pre) if l.heads]
    for t in pick_loops(iters) if loops is None else loops:
        rows += [(f"loop {t} {l.name}", cache[f"loop.{t}.{i}.hook_pattern"], [h.name for h in l.heads])
                 for i, l in enumerate(w.loop) if l.heads]
    rows += [(f"post.{i} {l.name}", cache[f"post.{i}.hook_pattern"], [h.name for h in l.heads])
             for i, l in enumerate(w.post) if l.heads]
    return rows


def _ticks(ax, labels: list[str], axis: str) -> None:
    n = len(labels)
    step = max(1, n // 24)
    idx = list(range(0, n, step))
    if axis == "x":
        ax.set_xticks(idx, [labels[i] for i in idx], rotation=90, fontsize=5)
    else:
        ax.set_yticks(idx, [labels[i] for i in idx], fontsize=5)


def linearised(pattern: np.ndarray) -> str | None:
    """How a head was linearised, read off its pattern (n_query, n_key): "sink" when every query puts
    more than 90% of its weight on the sink (the last key; the e^C scheme), "mirror" when every row
    is within a factor 1.5 of uniform (the mirror scheme: no sink, small scores), else None."""
    if pattern[:, -1].min() > 0.9:
        return "sink"
    lo = pattern.min(axis=1)
    if (lo > 0).all() and (pattern.max(axis=1) / lo).max() < 1.5:
        return "mirror"
    return None


def linear_part(pattern: np.ndarray, kind: str = "sink") -> np.ndarray:
    """The data part of a linearised head: the weights on the data keys (all but the sink for "sink")
    relative to their row mean, minus 1 (~ sigma c (a_i - mean a), the bilinear score the head group
    turns into its output)."""
    rest = pattern[:, :-1] if kind == "sink" else pattern
    return rest / rest.mean(axis=1, keepdims=True) - 1.0


def _draw_head(fig, ax, pattern: np.ndarray, labels: list[str]):
    kind = linearised(pattern)
    if kind is not None:
        img = linear_part(pattern, kind)
        v = float(np.abs(img).max()) or 1.0
        im = ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        _ticks(ax, labels[:-1] if kind == "sink" else labels, "x")
        if kind == "sink":
            return f"sink weight 1 - {1 - np.median(pattern[:, -1]):.1e}; rest/mean - 1"
        return "mirror (no sink): weight/mean - 1"
    with np.errstate(divide="ignore"):
        img = np.maximum(np.log10(pattern), LOG_FLOOR)
    im = ax.imshow(img, vmin=LOG_FLOOR, vmax=0, cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
    _ticks(ax, labels, "x")
    return "log10 weight"


def attention_figure(con: Construction, problem: Regression, iters: int, path: str, index: int = 0,
                     loops: list[int] | None = None, dtype: torch.dtype = torch.float64):
    """One image per (layer or loop, head), query tokens down, key tokens across. Selection heads
    (pairing, read-out) are drawn as log10 weights; linearised heads (``linearised``) as their data
    part (``linear_part``), with the sink's weight in the title."""
    plt = _pyplot()
    cache = run_cached(con, problem, iters, index, dtype)
    rows = attention_panels(con, cache, iters, loops)
    cols = max(p.shape[0] for _, p, _ in rows)
    labels = _labels(con, rows[0][1].shape[-1])
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.2 * cols, 2.9 * len(rows)), squeeze=False,
                             layout="constrained")
    for r, (title, pattern, names) in enumerate(rows):
        for h in range(cols):
            ax = axes[r, h]
            if h >= pattern.shape[0]:
                ax.axis("off")
                continue
            how = _draw_head(fig, ax, pattern[h], labels)
            ax.set_title(f"{title} / {names[h]}\n{how}", fontsize=6)
            _ticks(ax, labels, "y")
    fig.suptitle(f"attention of {con.weights.notes.get('algorithm', 'construction')} (problem {index}; "
                 f"query rows, key columns)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def state_panels(cache: dict, iters: int, loops: list[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """[(title, state (n, D))]: read-in, after TF_pre, the chosen loops, before the read-out."""
    panels = [("prompt", cache["hook_embed"]), ("after TF_pre", cache["hook_pre"])]
    panels += [(f"loop {t}", cache[f"loop.{t}.hook_state"]) for t in (pick_loops(iters) if loops is None else loops)]
    return panels + [("after TF_post", cache["hook_post"])]


def layout_figure(con: Construction, problem: Regression, iters: int, path: str, index: int = 0,
                  loops: list[int] | None = None, dtype: torch.dtype = torch.float64):
    """Layout rows (down, labelled) x tokens (across) for each stage; symmetric-log colours."""
    plt = _pyplot()
    from matplotlib.colors import SymLogNorm
    cache = run_cached(con, problem, iters, index, dtype)
    panels = state_panels(cache, iters, loops)
    lay = con.layout
    vmax = max(float(np.abs(s).max()) for _, s in panels) or 1.0
    norm = SymLogNorm(linthresh=1e-3, vmin=-vmax, vmax=vmax)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels) + 1.5, 0.13 * lay.dim + 2),
                             squeeze=False, sharey=True, layout="constrained")
    labels = _labels(con, panels[0][1].shape[0])
    for ax, (title, state) in zip(axes[0], panels):
        im = ax.imshow(state.T, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
        for _, block in list(lay)[1:]:
            ax.axhline(block.start - 0.5, color="k", lw=0.4)
        ax.set_title(title, fontsize=7)
        _ticks(ax, labels, "x")
    axes[0, 0].set_yticks(range(lay.dim), lay.labels(), fontsize=5)
    fig.colorbar(im, ax=axes, shrink=0.6, label="value (symmetric log)")
    fig.suptitle(f"residual stream of {con.weights.notes.get('algorithm', 'construction')} by layout row "
                 f"(problem {index})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return panels


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def cli_views(algo, opts, config: dict, variant: str, dtype_name: str, iters: int,
              attention_path: str | None, layout_path: str | None) -> Construction:
    """The automatic-temperature construction of (variant, dtype) on the first problem within the
    construction's assumptions; writes the requested figures. Returns the construction, or None
    (with a message on stderr) when the algorithm has no default step to build it with."""
    from .sweep import DTYPES, auto_temps
    problem = algo.draw(np.random.default_rng(opts.seed), opts)
    valid = [i for i in range(opts.problems) if i not in config.get("excluded", {})]
    i = valid[0]
    one = Regression(*(getattr(problem, f)[i:i + 1] for f in ("x", "y", "x_test", "y_test")))
    scores = config.get("score_bounds") or {}        # {} for constructions without linearised heads
    temps = auto_temps(variant, algo.n_tokens(opts), scores, DTYPES[dtype_name])
    step = config.get(algo.step_name)
    if step is None:                                   # sweeps of their own may not report it
        step = opts.step if opts.step is not None else algo.choose_step(problem)
    if not np.isfinite(step):
        print(f"views: {algo.name} has no single default {algo.step_name} (its sweep runs a grid); "
              f"pass --{algo.step_name} to draw the views", file=sys.stderr)
        return None
    con = algo.build(opts, step, temps, variant)
    from .outputs import write_atomic        # whole files or none (the CLI checked the paths)
    if attention_path:
        write_atomic(attention_path, lambda tmp: attention_figure(con, one, iters, tmp, dtype=dtype_name))
    if layout_path:
        write_atomic(layout_path, lambda tmp: layout_figure(con, one, iters, tmp, dtype=dtype_name))
    return con
