"""Runs the training step of the peer's own code (Leiay/looped_transformer, Yang et al. 2024) beside ours.

Nothing of the peer is copied here: this module imports the peer's ``scripts/`` folder from a checkout
the user names (``--peer DIR``) and calls its own ``models.build_model``, ``tasks.get_task_sampler`` and
``train.train_step``. Its ``train.py`` imports ``quinine``, ``funcy`` and ``wandb`` at module level for its CLI, schema and
logging; neither is used by ``train_step``, so absent ones are replaced by modules of no-ops.

    git clone https://github.com/Leiay/looped_transformer /tmp/peer
    python benchmarks/train_throughput.py --mode yang --peer /tmp/peer/scripts
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch


def _no_op(attr: str):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return lambda *a, **k: None


def _import_peer(scripts: Path):
    if not (scripts / "models.py").is_file() or not (scripts / "train.py").is_file():
        raise SystemExit(f"--peer {str(scripts)!r} is invalid: expected the scripts/ folder of a "
                         "Leiay/looped_transformer checkout (models.py, train.py)")
    for name in ("quinine", "funcy", "wandb"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)             # every name a no-op callable: schema.py builds
            stub.__getattr__ = _no_op                  # its schema from quinine at import
            sys.modules[name] = stub
    sys.path.insert(0, str(scripts))
    return (importlib.import_module(m) for m in ("models", "tasks", "train"))


def peer_step(scripts: Path, d: int, n_points: int, batch: int, width: int, heads: int, layers: int,
              loops: int, window: int, lr: float, device: torch.device):
    """(step function, model) running one of the peer's training steps per call: its task sampler,
    its looped GPT-2, its loss over the last ``window`` of ``loops`` loops, Adam."""
    models, tasks, train = _import_peer(scripts)
    conf = SimpleNamespace(family="gpt2_loop", n_embd=width, n_layer=layers, n_head=heads, n_dims=d,
                           n_positions=n_points, loop_func="z=f(x+z)", pred_type="regression")
    torch.manual_seed(0)
    model = models.build_model(conf).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=0.0)
    args = SimpleNamespace(model=conf, training=SimpleNamespace(n_loop_window=window, use_ctx=False))
    curriculum = SimpleNamespace(n_loops=loops)
    sampler = tasks.get_task_sampler(task_name="linear_regression", batch_size=batch, n_points=n_points,
                                     n_dims=d, n_dims_truncated=d, device=device)

    def step():
        task = sampler()
        train.train_step(args, curriculum, model, task.xs.float(), task.ys.float(), opt, None, None)

    return step, model
