"""The public construction API: everything a construction declares, in one import (docs/construction-api.md).

A construction is a pure function (sizes, step, temperatures, variant) -> ``Construction``:

    layout          ``Layout``: a name for every residual row (``weights.layout``)
    weights         ``AlgoFormerWeights(layout, pre, loop, post, notes)``: tuples of ``LayerWeights``
                    (heads ``HeadWeights``, an optional ``FFNWeights``, mask full/causal); ``loop`` is
                    applied T times and must map the layout onto itself
    prompt encoder  ``Construction.encode(x, y, x_test) -> tokens (B, n, D)``; the default writes the
                    regression prompt of ``prompt``; a subclass overrides ``encode`` (and
                    ``token_roles``) for a prompt of its own
    read-out        ``answer`` (read after TF_post) and ``iterate`` (read after TF_pre and every loop),
                    each a ``Readout(register, tokens)``
    assumptions     ``Construction.assumptions``: what the weights assume of the data (N, bounds, ...);
                    the verifier's ``Algorithm.violations`` checks problems against them
    temperatures    one ``Temperature(C, c)`` per linearised head group, made by ``bilinear_heads``
                    with a ``variant`` (``VARIANTS``: sink or mirror scheme, order)

The numpy reference, the score bounds that set c and the violation checks belong to the verifier's
side of a construction (``verify.interface.Algorithm``): this package never imports ``verify``.
``validate`` checks a built construction against one batch of its own inputs.
"""
from __future__ import annotations

import numpy as np

from .gadgets import gated_copy, identity, zero_where
from .gd import move, select_head
from .layout import Layout
from .linearise import (DEFAULT_VARIANT, VARIANTS, Temperature, bilinear_heads, is_mirror, odd_values,
                        order)
from .prompt import Construction, Readout, encode_regression, regression_layout
from .reference import run as run_numpy
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

__all__ = ["AlgoFormerWeights", "Construction", "DEFAULT_VARIANT", "FFNWeights", "HeadWeights", "Layout",
           "LayerWeights", "Readout", "Temperature", "VARIANTS", "bilinear_heads", "encode_regression",
           "gated_copy", "identity", "is_mirror", "move", "odd_values", "order", "regression_layout",
           "run_numpy", "select_head", "validate", "zero_where"]


def validate(con: Construction, x, y, x_test) -> np.ndarray:
    """Encode one batch and check what the model and the verifier rely on; returns the tokens.

    Raises ValueError naming the part at fault when: the encoder's output is not (B, n, D) with D the
    layout's width and finite values; ``token_roles`` does not name n tokens; a read-out names a
    register the layout lacks or tokens outside 0..n-1; the loop does not keep the stream finite for
    one pass of the numpy interpreter (``reference.run``) on these tokens."""
    if not isinstance(con, Construction):
        raise ValueError(f"con is a {type(con).__name__}, expected a constructions.prompt.Construction")
    tokens = np.asarray(con.encode(x, y, x_test))
    D = con.layout.dim
    if tokens.ndim != 3 or tokens.shape[2] != D:
        raise ValueError(f"encode returned shape {tokens.shape}, expected (B, n, D={D})")
    if not np.isfinite(tokens).all():
        raise ValueError("encode returned non-finite tokens")
    n = tokens.shape[1]
    roles = con.token_roles()
    if len(roles) != n:
        raise ValueError(f"token_roles() names {len(roles)} tokens, the encoder wrote n={n}")
    for what in ("answer", "iterate"):
        r: Readout = getattr(con, what)
        if r.register not in con.layout:
            raise ValueError(f"{what} reads register {r.register!r}, not in the layout {con.layout.names}")
        picked = np.arange(n)[r.tokens]
        if np.size(picked) == 0:
            raise ValueError(f"{what} reads no token (tokens={r.tokens!r} of n={n})")
    out, states = run_numpy(con.weights, tokens, 1)
    if not (np.isfinite(out).all() and np.isfinite(states[-1]).all()):
        raise ValueError("one pass of TF_pre, TF_loop, TF_post (numpy, float64) gave non-finite values")
    return tokens
