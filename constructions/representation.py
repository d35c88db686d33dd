"""Theorem 3.1: regression with representation, y = A Phi*(x), Phi* a given L-layer leaky-ReLU MLP.

The AlgoFormer computes Phi* exactly in TF_pre's feed-forward networks, runs gradient descent on the
features in TF_loop (Lemma A.2, ``gd.gd_step_layer`` reused as is) and reads A_T Phi*(x_test) in TF_post.

Layout (tokens as in ``prompt``, the prompt's x rows renamed ``xin``; registers added here):
    xin          x_i on x-tokens, x_test on the test token (the prompt)
    phi1..phi{L-1}  hidden activations of Phi* (every token; nothing reads them after the next layer)
    x            Phi*(x_i) on x-tokens, Phi*(x_test) on the test token, 0 on y-tokens and the sink
    xN, r, answer  as in ``gd``: Phi*(x_i)/N on x-tokens and -Phi*(x_i)/N on y-tokens (the mirrored
                 keys), A_k Phi*(x_i) - y_i and A_k Phi*(x_test), A_T Phi*(x_test) on the sink

TF_pre (L + 1 layers):
    layer l = 1..L (no heads: the identity attention W_V = 0 of the proof), FFN:
        dst_l <- leaky(W_l src_l + b_l [is_x + is_test]) = relu(z) - a relu(-z)  (``gadgets.leaky_relu_layer``)
        with xin -> phi1 -> ... -> phi{L-1} -> x. Each layer writes a register that is still 0, so
        the residual connection adds the FFN output to an exact 0: the features are Phi*(x) to the
        rounding of W z + b alone, as numpy computes them. The bias is read from the indicator rows
        of the x-tokens and the test token, so y-tokens and the sink (input 0) stay exactly 0.
    layer L + 1: the registers layer of Lemma A.2 on the features (``gd.gd_registers_layer``, reused
        as is): r = A_0 Phi*(x_i) - y_i = -y_i on x_i and the keys xN, through pairing heads and a
        gated FFN. It assumes x = 0 on y-tokens and the sink, which the gated biases guarantee.
TF_loop (1 layer): Lemma A.2 on the features: r_j <- r_j - eta grad L(A_k) Phi*(x_j)
TF_post (1 layer, 1 head): the sink takes r from the test token: answer = A_T Phi*(x_test)

Where this differs from the printed proof, and why:
  * "Mind the residual connections": the printed proof writes Phi*'s layers over the rows of x, but
    a residual layer can only *add*: an in-place layer must also subtract its input (the
    ``clear_src`` option), and x + (leaky(Wx + b) - x) rounds. Fresh registers per layer are exact.
  * The MLP's biases are gated by the x/test indicator rows. Applied with constant biases on every
    token, the y-tokens and the sink would hold Phi*(0) != 0 and count as samples of the GD heads
    (keys x/N), and the sink's value e^C r would no longer vanish.
  * The printed pre-transformer's last FFN "approximates the multiplication by 1/N"; 1/N is a
    constant, so the gated copy is exact. The printed r row holds "A_{k+1} Phi*(x_test)" at step 0:
    a typo for A_0 Phi*(x_test) = 0.
  * The post head is the selection head of ``gd`` (indicator scores), not the printed head on the
    positional embeddings: the sink shares p_{N+1} with the test token, so that head splits the
    sink's attention between the two and returns A_T Phi*(x_test) / 2 (a factor 2 the proof omits).
  * Gradient descent differences of Lemma A.2 (eta / c in W_V, loopable layout) are those of ``gd``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algoformer.tasks import MLP

from .embeddings import quasi_orthogonal
from .gadgets import leaky_relu_layer
from .gd import check_sizes, gd_answer_layer, gd_registers_layer, gd_step_layer
from .layout import Layout
from .linearise import DEFAULT_VARIANT, Temperature
from .prompt import Construction, Readout, encode_regression, regression_layout
from .weights import AlgoFormerWeights, FFNWeights, LayerWeights


def mlp_registers(layout: Layout, phi: MLP, src: str, dst: str = "x") -> list[str]:
    """Adds phi1 .. phi{L-1} and ``dst`` (the features); returns the registers each layer reads/writes."""
    widths = [W.shape[0] for W in phi.weights]
    names = [src] + [f"phi{l}" for l in range(1, len(widths))] + [dst]
    for name, width in zip(names[1:], widths):
        layout.add(name, width)
    return names


def mlp_layers(layout: Layout, phi: MLP, names: list[str], bias_rows: tuple[str, ...] = ()) -> tuple[LayerWeights, ...]:
    """Phi* as L FFN-only layers (identity attention): names[l] -> names[l + 1], exactly.

    ``bias_rows``: read each bias from these indicator rows instead of the constant b1, so that
    tokens with none of them (y-tokens, sink: src = 0) get z = 0, hence exactly 0 at every layer."""
    layers = []
    for l, (a, b, W, bias) in enumerate(zip(names[:-1], names[1:], phi.weights, phi.biases)):
        ffn = leaky_relu_layer(layout, a, b, W, np.zeros_like(bias) if bias_rows else bias, phi.slope)
        if bias_rows:
            w1, out = ffn.w1.copy(), W.shape[0]
            for row in bias_rows:
                w1[:out, layout.row(row)] += bias
                w1[out:2 * out, layout.row(row)] -= bias
            ffn = FFNWeights(w1, ffn.b1, ffn.w2, ffn.b2)
        layers.append(LayerWeights(ffn=ffn, name=f"phi-layer{l + 1}"))
    return tuple(layers)


def check_mlp(phi: MLP, d_in: int) -> None:
    if not phi.weights or len(phi.weights) != len(phi.biases):
        raise ValueError(f"phi has {len(phi.weights)} weights and {len(phi.biases)} biases: expected L >= 1 of each")
    prev = d_in
    for l, (W, b) in enumerate(zip(phi.weights, phi.biases)):
        if W.ndim != 2 or W.shape[1] != prev or b.shape != (W.shape[0],):
            raise ValueError(f"phi layer {l + 1} has W {W.shape}, b {b.shape}: expected W (*, {prev}), b (W.shape[0],)")
        prev = W.shape[0]
    if not 0 <= phi.slope < 1:
        raise ValueError(f"phi.slope={phi.slope!r} is invalid: expected a leaky slope in [0, 1)")


def representation_layout(phi: MLP, m: int, pos_dim: int) -> tuple[Layout, list[str]]:
    d = phi.weights[0].shape[1]
    prompt = regression_layout(d, m, pos_dim)
    lay = Layout()
    for name, block in prompt:
        lay.add("xin" if name == "x" else name, block.stop - block.start)
    names = mlp_registers(lay, phi, "xin", "x")
    lay.add("xN", lay.size("x"))
    lay.add("r", m)
    lay.add("answer", m)
    return lay, names


@dataclass(frozen=True)
class RepresentationConstruction(Construction):
    """Fed the regression prompt; the prompt's x rows sit in ``xin``."""

    def encode(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1] != self.assumptions.get("N", x.shape[1]):
            raise ValueError(f"N={x.shape[1]} samples, but the construction was built for N={self.assumptions['N']}")
        prompt = regression_layout(self.layout.size("xin"), self.layout.size("y"), self.layout.size("pos"))
        small = encode_regression(prompt, self.pos, x, y, x_test)
        h = np.zeros(small.shape[:2] + (self.layout.dim,))
        for name, block in prompt:
            h[:, :, self.layout["xin" if name == "x" else name]] = small[:, :, block]
        return h


def representation_construction(phi: MLP, N: int, eta: float, temp: Temperature, m: int = 1,
                                variant: str = DEFAULT_VARIANT, x_bound: float = 100.0, pos_eps: float = 0.1,
                                seed: int = 0, register_bound: float = 1e8) -> RepresentationConstruction:
    """Theorem 3.1. ``x_bound`` bounds the features |Phi*(x)| (the gates of the registers layer)."""
    check_sizes(N=N, m=m)
    d = phi.weights[0].shape[1] if phi.weights else 0
    check_mlp(phi, d)
    if not eta > 0:
        raise ValueError(f"eta={eta!r} is invalid: expected a float > 0")
    if not x_bound > 0:
        raise ValueError(f"x_bound={x_bound!r} is invalid: expected a float > 0")
    P = quasi_orthogonal(N + 1, pos_eps, seed)
    lay, names = representation_layout(phi, m, P.shape[1])
    weights = AlgoFormerWeights(
        lay,
        pre=mlp_layers(lay, phi, names, bias_rows=("is_x", "is_test")) + (gd_registers_layer(lay, N, x_bound, pos_eps),),
        loop=(gd_step_layer(lay, eta, temp, variant, register_bound, n_keys=2 * N + 2),),
        post=(gd_answer_layer(lay),),
        notes={"algorithm": "representation", "d": d, "d_phi": lay.size("x"), "L": len(phi.weights), "m": m,
               "N": N, "eta": eta, "C": temp.C, "c": temp.c, "variant": variant},
    )
    return RepresentationConstruction(weights, P, answer=Readout("answer", 2 * N + 1),
                                      iterate=Readout("r", list(range(0, 2 * N, 2)) + [2 * N]),
                                      assumptions={"N": N, "x_bound": x_bound, "register_bound": register_bound})
