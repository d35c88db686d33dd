"""Pictures of the SUBLEQ looped transformer on one program (matplotlib, PNG), read through
``run_with_cache``: ``--show-attention`` draws every head's softmax weights (log10) in TF_pre and in
the first and last loops shown; ``--show-layout`` draws the residual stream (layout rows x tokens)
after TF_pre and after the first loops, rows labelled by the punchcard layout."""
from __future__ import annotations

import numpy as np
import torch

from constructions.bridge import build_model
from constructions.subleq import build
from constructions.subleq_layout import Shape, encode, layout
from constructions.subleq_machine import Program, run_reference

from .subleq_run import DTYPES

FLOOR = -12.0   # log10 weights below 1e-12 are drawn as 1e-12


def token_labels(shape: Shape) -> list[str]:
    return ["S"] + [f"m{j}" for j in range(shape.n_cells)] + [f"i{k}" for k in range(shape.n_instructions)]


def _cache(program: Program, lam: float, dtype: str, loops: int) -> dict[str, np.ndarray]:
    model = build_model(build(Shape.of(program), lam), dtype=DTYPES[dtype])
    tokens = torch.tensor(encode(program)[None], dtype=DTYPES[dtype])
    _, cache = model.run_with_cache(tokens, loops)
    return {k: v[0].to(torch.float64).numpy() for k, v in cache.items()}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def attention_figure(program: Program, lam: float, dtype: str, path: str) -> None:
    steps = len(run_reference(program, 10_000)) - 1
    shown = sorted({1, max(1, steps)})
    cache = _cache(program, lam, dtype, shown[-1])
    w = build(Shape.of(program), lam)
    rows = [("TF_pre: fetch", "pre.0.", w.pre[0])]
    for t in shown:
        rows += [(f"loop {t}: execute", f"loop.{t}.0.", w.loop[0]), (f"loop {t}: fetch", f"loop.{t}.1.", w.loop[1])]
    labels = token_labels(Shape.of(program))
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 4.2 * len(rows)), squeeze=False)
    for r, (title, key, layer) in enumerate(rows):
        pattern = cache[key + "hook_pattern"]                              # (H, n, n)
        for hd in range(2):
            ax = axes[r, hd]
            im = ax.imshow(np.maximum(np.log10(np.maximum(pattern[hd], 1e-300)), FLOOR), vmin=FLOOR, vmax=0)
            ax.set_title(f"{title}: {layer.heads[hd].name}", fontsize=9)
            step = max(1, len(labels) // 24)
            ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=90, fontsize=6)
            ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=6)
            ax.set_xlabel("key"); ax.set_ylabel("query")
            fig.colorbar(im, ax=ax, fraction=0.046, label="log10 weight")
    fig.suptitle(f"{program.name}: attention, lam={lam:g}, {dtype}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layout_figure(program: Program, lam: float, dtype: str, path: str, loops: int = 3) -> None:
    shape = Shape.of(program)
    loops = max(1, min(loops, len(run_reference(program, 10_000)) - 1))
    cache = _cache(program, lam, dtype, loops)
    states = [("after TF_pre", cache["hook_pre"])] + [(f"after loop {t}", cache[f"loop.{t}.hook_state"])
                                                       for t in range(1, loops + 1)]
    lay, labels = layout(shape), token_labels(shape)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(states), figsize=(3 + 0.12 * shape.n_tokens * len(states), 0.12 * lay.dim + 2),
                             squeeze=False)
    for ax, (title, h) in zip(axes[0], states):
        im = ax.imshow(h.T, aspect="auto", cmap="coolwarm", vmin=-2, vmax=2, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
        ax.set_yticks(range(lay.dim), lay.labels(), fontsize=4)
        for _, block in lay:
            ax.axhline(block.start - 0.5, color="k", lw=0.3)
    fig.colorbar(im, ax=axes[0, -1], fraction=0.05)
    fig.suptitle(f"{program.name}: residual stream (rows: layout, columns: tokens), lam={lam:g}, {dtype}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
