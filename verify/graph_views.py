"""Pictures of a graph-search AlgoFormer at work on one graph (matplotlib, PNG).

    attention_figure   the two heads over the loops: every query of a head reads the same row
                       (their query is the constant row), so each head is one heatmap, loops x key
                       tokens, log10 of the softmax weight: the select head puts ~1 on the node the
                       loop visits (the sink in the loop that finds none), the any head spreads over
                       the nodes still active
    layout_figure      the state registers (reached, visited, key, distance, parent) after every
                       loop, loops x nodes, one panel per register

Both run the model through ``run_with_cache`` (hook names in ``algoformer.model``) for as many loops
as the search takes. ``python -m verify bfs|dfs|dijkstra --show-attention PATH --show-layout PATH``
draws them for the first graph of the run at the first dtype and lam.
"""
from __future__ import annotations

import numpy as np
import torch

from constructions.bridge import build_model
from constructions.graphs import Graph, SearchSpec, encode, search_weights

from .graph_reference import reference

LOG_FLOOR = -20.0


def _cache(spec: SearchSpec, g: Graph, source: int, dtype: torch.dtype):
    w = search_weights(spec)
    states = reference(spec.rule, g, source)
    model = build_model(w, dtype=dtype)
    x = torch.tensor(encode(w.layout, g, states[0]), dtype=dtype).unsqueeze(0)
    _, cache = model.run_with_cache(x, len(states) - 1)
    return w.layout, len(states) - 1, {k: v[0].to(torch.float64).numpy() for k, v in cache.items()}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def attention_figure(spec: SearchSpec, g: Graph, source: int, dtype: torch.dtype, path: str) -> None:
    lay, T, cache = _cache(spec, g, source, dtype)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.3 * g.n, 2 + 0.25 * T), squeeze=False)
    for ax, (layer, title) in zip(axes[0], ((0, "select head (L1)"), (3, "any head (L4)"))):
        rows = np.stack([cache[f"loop.{t}.{layer}.hook_pattern"][0, 0] for t in range(1, T + 1)])  # (T, n+1)
        im = ax.imshow(np.log10(np.maximum(rows, 10 ** LOG_FLOOR)), aspect="auto", cmap="viridis",
                       vmin=LOG_FLOOR, vmax=0)
        ax.set_title(title); ax.set_xlabel("key token (last: sink)"); ax.set_ylabel("loop")
        ax.set_xticks(range(g.n + 1)); ax.set_xticklabels([str(i) for i in range(g.n)] + ["s"], fontsize=6)
        ax.set_yticks(range(T)); ax.set_yticklabels([str(t) for t in range(1, T + 1)], fontsize=6)
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 softmax weight")
    fig.suptitle(f"{spec.rule}: n={g.n}, lam={spec.lam:g}, {str(dtype).removeprefix('torch.')}")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layout_figure(spec: SearchSpec, g: Graph, source: int, dtype: torch.dtype, path: str) -> None:
    lay, T, cache = _cache(spec, g, source, dtype)
    regs = [r for r in ("r", "vis", "k", "d", "p", "term") if r in lay]
    states = [cache["hook_pre"]] + [cache[f"loop.{t}.hook_state"] for t in range(1, T + 1)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(regs), figsize=(3.2 * len(regs) + 0.2 * g.n, 2.5 + 0.25 * T),
                             squeeze=False, layout="constrained")
    for ax, reg in zip(axes[0], regs):
        grid = np.stack([h[:g.n, lay.row(reg)] for h in states])        # (T + 1, n)
        im = ax.imshow(grid, aspect="auto", cmap="magma")
        ax.set_title(reg); ax.set_xlabel("node"); ax.set_ylabel("after loop")
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"{spec.rule}: state registers over the loops (n={g.n}, lam={spec.lam:g})")
    fig.savefig(path, dpi=120)
    plt.close(fig)
