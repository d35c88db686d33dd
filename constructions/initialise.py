"""Start training from constructed weights: the plug-ins behind ``python -m algoformer.train --init-from``.

Registered in ``pyproject.toml`` under the entry-point group ``algoformer.initialisers`` (the model
package finds them there and never imports this package; see ``algoformer.training.initialisers``):

    gd              Theorem 4.2 (``causal_gd``): GD on every prefix, a prediction at every x-token;
                    task linear. Same scored samples as the task's own decoder prompts.
    newton          Theorem 4.1 (``newton``): Newton-Schulz on the N - 1 context samples, prediction at
                    the N-th x; task linear.
    representation  Theorem 3.1 (``representation``): Phi* in the FFNs, GD on Phi*(x) over the N - 1
                    context samples, prediction at the N-th x; task representation.

Prompts. A task prompt holds N samples (x_i, y_i). The constructions take N' = N - 1 context samples
and a query x_test = x_N (its label y_N is the target), in the construction's own encoding (positional
codes, indicators, sink; ``Construction.encode``). The decoder construction answers at x_1 .. x_N, so
its run is scored at the same N samples as a run from scratch; the encoder constructions answer once,
at x_N. The encoder is fixed; the read-out Linear(D, 1) starts as an exact selection of the answer
register, and every weight of the model trains.

Step and temperature. The weights fix the step (eta, alpha) and the temperatures, so they are
chosen once per run from a calibration batch of the task (``CALIBRATION_PROBLEMS`` prompts drawn with
their own seed, independent of the training seed) exactly as ``python -m verify`` chooses them: the
largest step inside the convergence region of every calibration problem (eta = 1 / max lambda_max,
alpha = half the smallest 2 / ||S S^T||), and the automatic temperature of
``linearise.choose_temperature`` for float32 (training's dtype) from the calibration's score bounds.
Fresh training problems can exceed those bounds a little; the linearisation error then grows as
theta^2, from a theta chosen far below 1, so the construction still holds to float32 accuracy.

Variant. Always ``DEFAULT_VARIANT`` (odd+mirror): the mirror scheme has no sink and no e^C / c
value weights, so a fine-tuning step moves it by an amount of the order of the step (notebook d: a
sink construction leaves its solution at once, its e^C / c values make the loop ~1e6 times more
sensitive). The decoder read-out (``causal_gd.predict_layer``) is a sink head in every variant (its
key set grows with the position); its C and c are printed in the run header.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from algoformer import AlgoFormer
from algoformer.tasks import Regression
from algoformer.training.initialisers import Initialised, Reference, Shape
from algoformer.training.prompts import Prompt

from . import bridge
from .causal_gd import causal_gd_construction
from .linearise import DEFAULT_VARIANT, Temperature, choose_temperature
from .newton import alpha_limit, newton_construction
from .prompt import Construction
from .representation import representation_construction
from .scores import decoder_score_bounds, gram_max, newton_score_bounds, prefix_moments

VARIANT = DEFAULT_VARIANT
CALIBRATION_SEED = 4_202_135_72          # the paper's arXiv number; independent of the training seed
CALIBRATION_PROBLEMS = 1024
UNIT_ROUNDOFF = 2.0 ** -24               # float32, the training dtype
LOG_MAX = math.log(float(torch.finfo(torch.float32).max)) - 12.0   # verify's headroom for e^C / c, n / c
_PLACEHOLDER = Temperature(1.0, 1.0)     # shape only: the widths do not depend on step or temperature


# -- prompts ------------------------------------------------------------------------------------------
def split(prompt: Prompt) -> Regression:
    """A task prompt of N samples -> N - 1 context samples and the query x_N (label y_N)."""
    if prompt.x is None:
        raise ValueError("the constructions need a regression prompt (task linear or representation)")
    x, y = prompt.x.astype(np.float64), prompt.y.astype(np.float64)
    return Regression(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1])


def encoder_for(con: Construction) -> Callable[[Prompt], Prompt]:
    """Prompt -> the construction's own prompt, scored at the construction's answer tokens. The
    answers belong to the last samples of the prompt (decoder: all N; encoder: the query x_N)."""
    def encode(prompt: Prompt) -> Prompt:
        p = split(prompt)
        tokens = con.encode(p.x, p.y, p.x_test)                          # (B, n, D)
        B, n, _ = tokens.shape
        at = np.atleast_1d(np.arange(n)[con.answer.tokens])             # answer tokens
        samples = np.arange(prompt.x.shape[1])[-len(at):]
        targets = np.zeros((B, n, 1), dtype=np.float32)
        targets[:, at] = prompt.y[:, samples]
        weight = np.zeros(n, dtype=np.float32)
        weight[at] = 1.0
        sample = np.full(n, -1)
        sample[at] = samples
        return Prompt(tokens.astype(np.float32), targets, weight, sample, prompt.x, prompt.y)
    return encode


# -- the model ----------------------------------------------------------------------------------------
def _pow2(ratio: torch.Tensor) -> torch.Tensor:
    """sqrt(ratio) rounded to a power of two (1 where ratio is 0 or not finite): scaling by it is exact."""
    ok = torch.isfinite(ratio) & (ratio > 0)
    return torch.where(ok, torch.exp2(torch.round(0.5 * torch.log2(torch.where(ok, ratio, 1.0)))), 1.0)


def _balance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row i: the power of two s_i with max|a_i| s_i ~ max|b_i| / s_i."""
    return _pow2(b.abs().amax(-1) / a.abs().amax(-1))


def balance(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same function with every factorised pair balanced: query row r x s, key row r / s; value
    row x s, its W_O column / s; FFN hidden unit (W_1 row, b_1) x s, its W_2 column / s (ReLU is
    positively homogeneous). Each s is a power of two, so every product, and the model's output, is
    unchanged bit for bit. Why: the bridge puts a head's whole scale on one side (W_V selects rows
    with weight 1, W_O carries e^C / c or n / c up to ~1e11; W_Q carries c ~ 1e-4 or the exclusion
    score 800 against keys of size 1; gated FFN units carry 1e8 on one side). Adam moves every entry
    by about the learning rate whatever its size, so the side of size 1 next to a factor 1e11 turns a
    step of 1e-6 into an output change of 1e5; balanced, the largest factor on either side is the
    square root of the product."""
    out = dict(state)
    for key in [k for k in state if k.endswith("attn.w_q")]:
        pre = key[: -len("w_q")]
        q, k = out[pre + "w_q"], out[pre + "w_k"]                               # (H, k, D)
        s = _balance(q, k)                                                        # (H, k)
        out[pre + "w_q"], out[pre + "w_k"] = q * s[..., None], k / s[..., None]
        v, o = out[pre + "w_v"], out[pre + "w_o"]                               # (H, r, D), (D, H*r)
        H, r, _ = v.shape
        t = _balance(v, o.T.reshape(H, r, -1))                                    # (H, r)
        out[pre + "w_v"], out[pre + "w_o"] = v * t[..., None], o / t.reshape(1, H * r)
    for key in [k for k in state if k.endswith("ffn.fc1.weight")]:
        pre = key[: -len("fc1.weight")]
        w1, b1, w2 = out[pre + "fc1.weight"], out[pre + "fc1.bias"], out[pre + "fc2.weight"]
        u = _balance(torch.cat([w1, b1[:, None]], 1), w2.T)                       # (F,)
        out[pre + "fc1.weight"], out[pre + "fc1.bias"], out[pre + "fc2.weight"] = w1 * u[:, None], b1 * u, w2 / u
    return out


def trainable_model(con: Construction, attention: str = "sdpa") -> AlgoFormer:
    """The construction's layers (Eq. 1 exactly, factorised pairs ``balance``d) plus a read-out
    Linear(D, 1) selecting the answer register (weight 1 on its row, 0 elsewhere, bias 0: exact in
    floating point). float32, trainable."""
    w = con.weights
    cfg = dataclasses.replace(bridge.model_config(w, attention), d_out=1)
    state = balance(bridge.state_dict(w))
    read = torch.zeros(1, w.d_model, dtype=torch.float64)
    read[0, con.layout.row(con.answer.register)] = 1.0
    state.update({"read_out.weight": read, "read_out.bias": torch.zeros(1, dtype=torch.float64)})
    model = AlgoFormer(cfg)
    model.load_exact(state)
    return model.train().requires_grad_(True)


def shape_of(con: Construction) -> Shape:
    heads = {s: [len(layer.heads) for layer in getattr(con.weights, s)] for s in ("pre", "loop", "post")}
    flat = [h for hs in heads.values() for h in hs]
    detail = "; ".join(f"{s} {','.join(map(str, hs)) or '-'}" for s, hs in heads.items())
    return Shape(con.weights.d_model, max(flat), max(len(hs) for hs in heads.values()), detail)


def auto_temps(scores: dict[str, float], n: int) -> dict[str, Temperature]:
    return {g: choose_temperature(VARIANT, n, max(a, 1e-300), UNIT_ROUNDOFF, LOG_MAX) for g, a in scores.items()}


def lambda_max(x: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(np.einsum("...ni,...nj->...ij", x, x) / x.shape[-2])[..., -1]


# -- the three constructions: (cfg, calibration or None) -> (construction, header text) ------------------
# -- gate constants from the data ---------------------------------------------------------------------
# The exact gadgets (``gadgets.gated_copy``, ``zero_where``) gate a register by an indicator row times a
# big constant B (x_bound, register_bound), exact while |register| <= B. Training perturbs every weight,
# the zero ones included, so the indicator rows pick up tiny values, and the next gate multiplies them by
# B: with verify's defaults (B = 1e8) one Adam sign step of 1e-8 on every weight moved the construction's
# predictions by O(1) within 5 loops (GD and Newton, d = 3, N = 8), with B ~ 1e2 by 1e-4 after 30 loops
# (``tests/test_init_from.py::test_tight_gates_keep_the_construction_under_a_sign_step``). So the
# constructions behind ``--init-from`` take B from the calibration batch: GATE_MARGIN times the largest
# |x| (or feature) and the largest register the numpy algorithm reaches in CALIBRATION_LOOPS loops.
# Beyond B a gate leaks |s| - B, it does not fail outright.
GATE_MARGIN = 4.0
CALIBRATION_LOOPS = 64


def _x_bound(*arrays: np.ndarray) -> float:
    return GATE_MARGIN * max(float(np.abs(a).max()) for a in arrays)


def newton_register_max(cal: Regression, alpha: float, loops: int = CALIBRATION_LOOPS) -> float:
    """max over k <= loops, problems, samples of |M_k x_i| (Newton-Schulz from M_0 = alpha S)."""
    S = np.einsum("bni,bnj->bij", cal.x, cal.x)
    M, big = alpha * S, 0.0
    for _ in range(loops + 1):
        big = max(big, float(np.abs(cal.x @ M).max()))
        M = 2 * M - M @ S @ M
    return big


def prefix_gd_register_max(cal: Regression, eta: float, loops: int = CALIBRATION_LOOPS) -> float:
    """max over k <= loops of |w^i_k|, |w^i_k . x_i| and |w^i_k . x_j - y_j| (decoder GD on every prefix)."""
    X, S, b = prefix_moments(cal)
    w, big = np.zeros_like(X), float(np.abs(cal.y).max())
    for _ in range(loops + 1):
        pred = np.einsum("bnd,bnd->bn", w, X)
        big = max(big, float(np.abs(w).max()), float(np.abs(pred).max()),
                  float(np.abs(pred[:, :-1] - cal.y[..., 0]).max()))
        w = w - eta * (np.einsum("bnij,bnj->bni", S, w) - b)
    return big


def gd_register_max(f: Regression, eta: float, loops: int = CALIBRATION_LOOPS) -> float:
    """max over k <= loops of |A_k f_i - y_i| and |A_k f_test| (GD on the features f)."""
    B, N, d = f.x.shape
    A, big = np.zeros((B, f.y.shape[-1], d)), 0.0
    for _ in range(loops + 1):
        r = np.einsum("bmd,bnd->bnm", A, f.x) - f.y
        big = max(big, float(np.abs(r).max()), float(np.abs(np.einsum("bmd,bd->bm", A, f.x_test)).max()))
        A = A - eta * np.einsum("bnm,bnd->bmd", r, f.x) / N
    return big


def make_gd(cfg, cal: Regression | None) -> tuple[Construction, str]:
    N = cfg.n_points - 1
    if cal is None:
        return causal_gd_construction(cfg.d, N, 1.0, {"mean": _PLACEHOLDER, "post": _PLACEHOLDER}, VARIANT), ""
    eta = float(1.0 / np.linalg.eigvalsh(prefix_moments(cal)[1])[..., -1].max())
    rb = GATE_MARGIN * prefix_gd_register_max(cal, eta)
    con = causal_gd_construction(cfg.d, N, eta, auto_temps(decoder_score_bounds(cal, eta), 2 * N + 2), VARIANT,
                                 register_bound=rb)
    n = con.weights.notes
    return con, (f"eta={eta:.4g}, loop c={n['c_mean']:.3g} (mirror, no sink), "
                 f"read-out C={n['C_post']:.3g} c={n['c_post']:.3g} (sink), register_bound={rb:.3g}")


def make_newton(cfg, cal: Regression | None) -> tuple[Construction, str]:
    N = cfg.n_points - 1
    if N < cfg.d:
        raise ValueError(f"n_points={cfg.n_points!r} is invalid: expected an integer >= d + 1 = {cfg.d + 1} "
                         "with init_from='newton' (Newton needs an invertible X^T X over the n_points - 1 "
                         "context samples)")
    if cal is None:
        return newton_construction(cfg.d, N, 1.0, dict.fromkeys(("pre", "loop", "post"), _PLACEHOLDER), VARIANT), ""
    alpha = float(0.5 * alpha_limit(cal.x).min())
    xb, rb = _x_bound(cal.x, cal.x_test), GATE_MARGIN * newton_register_max(cal, alpha)
    con = newton_construction(cfg.d, N, alpha, auto_temps(newton_score_bounds(cal, alpha), 2 * N + 2), VARIANT,
                              x_bound=xb, register_bound=rb)
    n = con.weights.notes
    return con, (f"alpha={alpha:.4g}, " + ", ".join(f"{g} c={n['c_' + g]:.3g}" for g in ("pre", "loop", "post"))
                 + f", x_bound={xb:.3g}, register_bound={rb:.3g}")


def make_representation(cfg, cal: Regression | None) -> tuple[Construction, str]:
    N, phi = cfg.n_points - 1, cfg.task_spec().phi
    if cal is None:
        return representation_construction(phi, N, 1.0, _PLACEHOLDER, 1, VARIANT), ""
    f = Regression(phi(cal.x), cal.y, phi(cal.x_test), cal.y_test)
    eta = float(1.0 / lambda_max(f.x).max())
    temp = auto_temps({"loop": gram_max(f) / N}, 2 * N + 2)["loop"]
    xb, rb = _x_bound(f.x, f.x_test), GATE_MARGIN * gd_register_max(f, eta)
    con = representation_construction(phi, N, eta, temp, 1, VARIANT, x_bound=xb, register_bound=rb)
    return con, f"eta={eta:.4g}, loop c={temp.c:.3g} (mirror, no sink), x_bound={xb:.3g}, register_bound={rb:.3g}"


# -- the plug-in --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConstructionInitialiser:
    name: str
    tasks: tuple[str, ...]
    theorem: str
    make: Callable
    reference: tuple[str, str, str]      # (algorithm, the notes' key of its step, features): ``Reference``

    def _check(self, cfg) -> None:
        if cfg.n_points < 2:
            raise ValueError(f"n_points={cfg.n_points!r} is invalid: expected an integer >= 2 with "
                             f"init_from={self.name!r} (N - 1 context samples and a query)")

    def shape(self, cfg) -> Shape:
        self._check(cfg)
        return _shape(self, cfg.task, cfg.d, cfg.n_points, cfg.phi_seed, cfg)

    def construction(self, cfg) -> tuple[Construction, str]:
        """The construction a run with this config starts from (calibrated as below), and its header text."""
        self._check(cfg)
        rng = np.random.default_rng(CALIBRATION_SEED)
        cal = split(cfg.task_spec().sample(rng, CALIBRATION_PROBLEMS, cfg.n_points))
        return self.make(cfg, cal)

    def build(self, cfg) -> Initialised:
        con, info = self.construction(cfg)
        notes = dict(con.weights.notes)
        algorithm, step, features = self.reference
        return Initialised(trainable_model(con, cfg.attention), encoder_for(con),
                           f"initialised from the {self.name} construction ({self.theorem}), variant {VARIANT}, "
                           f"{info}; prompts in the construction's own encoding (D={con.weights.d_model})",
                           notes, Reference(algorithm, float(notes[step]), features))


def _shape(plugin: ConstructionInitialiser, task: str, d: int, n_points: int, phi_seed: int, cfg) -> Shape:
    """Cached per sizes: every TrainConfig validates its shape (on construction, resume, from_dict)."""
    key = (plugin.name, task, d, n_points, phi_seed)
    if key not in _SHAPES:
        _SHAPES[key] = shape_of(plugin.make(cfg, None)[0])
    return _SHAPES[key]


_SHAPES: dict[tuple, Shape] = {}

gd = ConstructionInitialiser("gd", ("linear",), "Theorem 4.2, decoder GD", make_gd, ("gd", "eta", "x"))
newton = ConstructionInitialiser("newton", ("linear",), "Theorem 4.1, Newton-Schulz", make_newton,
                                 ("newton", "alpha", "x"))
representation = ConstructionInitialiser("representation", ("representation",), "Theorem 3.1, GD on Phi*(x)",
                                         make_representation, ("gd", "eta", "phi"))
