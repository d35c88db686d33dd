"""Initialisers: start training from constructed weights (``--init-from``), found by entry point.

The model package never imports the constructions (the project's layering rule). An initialiser is
a plug-in: an object registered under the entry-point group ``algoformer.initialisers`` (declared in
``pyproject.toml``; ``constructions.initialise`` provides gd, newton and representation) and
loaded here with ``importlib.metadata`` only when a run asks for it. A plug-in provides

    tasks                     the tasks whose prompts its construction solves
    shape(cfg) -> Shape       the model's width, heads per layer and layers per stage (cheap: no
                              data); they are dictated by the construction
    build(cfg) -> Initialised the trainable model holding the constructed weights, the prompt
                              encoder that feeds it and (optionally) the numpy algorithm its loop
                              emulates (``Reference``; ``python -m algoformer.evaluate`` uses both)

The construction's own format. A construction reads its prompt through named registers (positional
codes, token-kind indicators, a sink), which the training's linear read-in of raw tokens cannot
produce. So an initialised run keeps the task's data (same generator, same targets) but re-encodes
every batch with the construction's encoder (``Initialised.encode``: Prompt -> Prompt whose tokens
are D wide, with targets and weights moved to the tokens where the construction answers). The model
has no read-in and no positional table (the encoder is fixed, not trained); its read-out is a
trainable Linear(D, 1) initialised to select the answer register, exactly (weights 0 and 1). Every
layer is the paper's Eq. 1 (no LayerNorm, no score scaling, ReLU), as the construction needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable, Protocol

from ..model import AlgoFormer
from .prompts import Prompt

if TYPE_CHECKING:
    from .config import TrainConfig

GROUP = "algoformer.initialisers"


@dataclass(frozen=True)
class Shape:
    width: int      # D, the construction's layout
    heads: int      # the most heads of any layer (layers may differ: see ``detail``)
    layers: int     # the most layers of any stage
    detail: str     # per stage, e.g. "pre 2; loop 2; post 2" (heads per layer)


@dataclass(frozen=True)
class Reference:
    """The numpy algorithm that the construction's loop emulates, one loop per step
    (``baselines.each_step``): evaluate compares the run with it loop by loop on the same prompts."""
    algorithm: str                         # gd | newton (``baselines.PATHS``)
    step: float                            # eta (gd) or alpha (newton), fixed by the weights
    features: str = "x"                    # x, or phi: the task's Phi*(x) (representation)


@dataclass
class Initialised:
    model: AlgoFormer                      # float32, trainable, holding the constructed weights
    encode: Callable[[Prompt], Prompt]     # task prompt -> the construction's own prompt
    description: str                       # one line for the run header (construction, variant, temperature)
    notes: dict                            # the construction's parameters (step, temperatures, variant, sizes)
    reference: Reference | None = None     # what its loop computes, if the plug-in says


class Initialiser(Protocol):
    tasks: tuple[str, ...]

    def shape(self, cfg: "TrainConfig") -> Shape: ...

    def build(self, cfg: "TrainConfig") -> Initialised: ...


def available() -> tuple[str, ...]:
    """The names registered under ``GROUP`` (empty if the project is not installed)."""
    return tuple(sorted(ep.name for ep in entry_points(group=GROUP)))


def load(name: str) -> Initialiser:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        names = available()
        raise ValueError(f"init_from={name!r} is invalid: expected one of {', '.join(names)}" if names else
                         f"init_from={name!r} is invalid: no initialisers are registered under the entry-point "
                         f"group {GROUP!r} (install the project: python -m pip install --no-deps -e .)")
    return found[0].load()
