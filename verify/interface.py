"""The two kinds of entry that ``python -m verify NAME`` runs (see ``registry`` and docs/construction-api.md).

``Algorithm``   a temperature-sweep algorithm: the verifier draws seeded problems, drops those outside
                the construction's assumptions, builds the construction for a schedule of temperatures,
                runs it on the model, and compares every iterate and the prediction with the numpy
                reference. The CLI gives it every standard option (``cli.add_common``), the table, the
                verdict, ``--json``, ``--plot``, ``--show-attention`` and ``--show-layout``.
``Command``     a self-contained command with its own arguments and runner, for checks that are not a
                regression sweep (the symbolic proofs; exactness per loop over programs; graph
                algorithms): ``add_arguments(parser)`` declares its options, ``run(args) -> int`` is its
                exit status. ``ArgumentError`` raised in ``run`` is printed as one line with status 2.

Both are frozen dataclasses of callables with a ``name`` (the CLI word) and a one-line ``summary``
(shown by ``python -m verify --help``). This module imports nothing from the algorithms, so every
algorithm module, the builtins and the plug-ins alike, imports it without a cycle.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from constructions.linearise import odd_values


class ArgumentError(Exception):
    """A bad command-line value found after parsing: the CLI prints it as one line and exits 2."""


@dataclass(frozen=True)
class Options:
    """Sizes and parameters common to every algorithm (the CLI fills them)."""
    N: int = 40
    d: int = 20
    m: int = 1
    problems: int = 64
    seed: int = 0
    x_bound: float = 100.0
    register_bound: float = 1e8    # |registers| the zeroing FFNs assume (checked on the numpy run)
    step: float | None = None      # eta (GD) or alpha (Newton); None = chosen from the data
    q: int = 3                     # AR order / copied tokens (``copy``, ``ar`` only; paper: 3)
    extra: dict = field(default_factory=dict)   # the values of an Algorithm's own options (add_arguments)


def regression_tokens(opts: Options) -> int:
    """n = 2N + 2: the encoder prompt of ``constructions.prompt`` (N pairs, the query, the sink)."""
    return 2 * opts.N + 2


@dataclass(frozen=True)
class Algorithm:
    """What the sweep needs of a compiled algorithm. ``problem`` is any frozen dataclass with the array
    fields x, y, x_test, y_test (batch first; ``algoformer.tasks.Regression`` or one of its own), which
    the sweep subsets to the problems inside the assumptions; ``step`` is the algorithm's one scalar
    parameter (``step_name``: the CLI option ``--<step_name>``); ``temps`` maps each linearised head
    group to its ``Temperature`` (the groups are the keys of ``score_bounds``)."""
    name: str
    summary: str
    step_name: str                                                   # "eta" / "alpha"
    draw: Callable[[np.random.Generator, Options], object]           # seeded problems (B of them)
    choose_step: Callable[[object], float]                           # a safe default from the data
    violations: Callable[[object, Options, float], np.ndarray]       # (B,) str, "" = within assumptions
    score_bounds: Callable[[object, float], dict[str, float]]        # group -> max |a| (sets c)
    build: Callable                      # (opts, step, temps, variant) -> constructions.prompt.Construction
    reference: Callable                  # (problem, iters, step) -> references.Trajectory (emulate's shapes)
    sweep: Callable | None = None      # replaces ``sweep.run_sweep`` (same signature), e.g. over beta
    verdict: Callable | None = None    # replaces ``report.verdict_lines`` (rows, n) -> lines
    options: tuple[str, ...] = ()      # extra CLI options this algorithm takes, e.g. ("q",)
    # (problem, ref, step, iters, temps, variant, n, u) -> (B,) bound on |prediction error| after T loops
    emulation_bound: Callable | None = None
    # (problem, iters, step, numpy dtype) -> Trajectory: the algorithm in another arithmetic
    reference_in: Callable | None = None
    # the linearisation variants its construction takes (the sinh ones need mirrored values)
    supports: Callable[[str], bool] = lambda variant: not odd_values(variant)
    # n, the tokens of its prompt (the keys every query sees): the sink's C and the error bounds use it
    n_tokens: Callable[[Options], int] = regression_tokens
    # the common options it does not use (e.g. ("N", "m", "x_bound")): left out of the configuration
    ignores: tuple[str, ...] = ()
    # options of its own besides the standard ones: (parser) -> None; their values reach draw/build/...
    # as ``opts.extra[dest]`` and are printed with the configuration
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


@dataclass(frozen=True)
class Command:
    """A self-contained entry: ``add_arguments(parser)`` adds its options to its own subparser (an
    ``argparse.ArgumentParser`` whose errors are one line and exit 2; ``cli.add_common`` adds the
    standard ones if it wants them), ``run(args) -> int`` runs it and returns the exit status."""
    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""              # the subcommand's --help text (default: the summary)


Entry = Union[Algorithm, Command]


def bound_violations(problem, opts: Options) -> np.ndarray:
    """(B,) "max|x| > x_bound=..." where a problem's x or x_test leaves the declared bound, else ""."""
    big = np.maximum(np.abs(problem.x).max(axis=(1, 2)), np.abs(problem.x_test).max(axis=1))
    return np.where(big > opts.x_bound, np.char.add("max|x| > x_bound=", str(opts.x_bound)), "")
