"""Constructions and trained models as TransformerLens HookedTransformers (constructions.to_transformer_lens):
the same prompt through our model and through the export gives the same outputs and the same per-loop
states under the mapped hook names."""
import copy
import json

import numpy as np
import pytest
import torch

tl_lib = pytest.importorskip("transformer_lens", reason="the optional extra .[interp] (transformer-lens) "
                             "is not installed")
try:
    from transformer_lens import HookedTransformer  # noqa: F401
except ImportError:
    pytest.skip("the installed transformer-lens has no HookedTransformer (removed in 4.0)", allow_module_level=True)

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig
from constructions.bridge import build_model
from constructions.to_transformer_lens import (NotExportable, encode, export_transformer_lens,
                                              load_transformer_lens, rows, to_hooked_transformer)
from verify.algorithms import ALGORITHMS, Options
from verify.sweep import auto_temps

OPTS = Options(N=6, d=3, problems=4)
T = 5


def _construction(name: str):
    algo = ALGORITHMS[name]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps("odd+mirror", 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    con = algo.build(OPTS, step, temps, "odd+mirror")
    return con, torch.from_numpy(con.encode(problem.x, problem.y, problem.x_test))


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))


# Tolerance, derived rather than chosen: both libraries compute the same products in float64, but
# the zero-padding (d_head = the widest value map, every block as wide as the widest) changes the
# length, hence the summation order, of some dot products. To first order a computation's rounding
# difference scales with the unit roundoff u, and the constructions amplify it (1/c heads, Newton's
# doubling): the amplification K of this model on this prompt is measured as the float32 run's
# deviation from the float64 run divided by u32. Two float64 roundings then differ by at most about
# 2 K u64 (plus a few u64 where float32 happens to be exact).
U32, U64 = 2.0 ** -24, 2.0 ** -53


def _tolerances(model: AlgoFormer, x: torch.Tensor, n_loops: int) -> dict[str, float]:
    out64, c64 = model.run_with_cache(x, n_loops)
    m32 = copy.deepcopy(model).float()
    out32, c32 = m32.run_with_cache(x.float(), n_loops)
    c64["out"], c32["out"] = out64, out32
    return {k: 2 * _max_rel(c32[k].double(), c64[k]) * U64 / U32 + 8 * U64 for k in c64
            if c64[k].is_floating_point()}


@pytest.mark.parametrize("name", ["gd", "newton", "decoder-gd"])
def test_round_trip_outputs_and_every_loop_state(name):
    con, tokens = _construction(name)
    ours = build_model(con.weights)
    hooked, hooks = to_hooked_transformer(ours, T, n_ctx=tokens.shape[1])
    direction = hooked.cfg.attention_dir
    assert direction == ("causal" if con.weights.loop[0].mask == "causal" else "bidirectional")
    out, cache = ours.run_with_cache(tokens, T)
    tol = _tolerances(ours, tokens, T)
    theirs, tl_cache = hooked.run_with_cache(encode(ours, tokens), start_at_layer=0)
    assert _max_rel(theirs, out) <= tol["out"]
    for t in range(1, T + 1):
        key = f"loop.{t}.hook_state"
        assert _max_rel(tl_cache[hooks[key]], cache[key]) <= tol[key]
    pattern = next(k for k in cache if k.startswith(f"loop.{T}.") and k.endswith("hook_pattern"))
    H = cache[pattern].shape[1]
    assert _max_rel(tl_cache[hooks[pattern]][:, :H], cache[pattern]) <= tol[pattern]
    # the padded heads (if any) carry no value: their z is exactly zero
    assert torch.count_nonzero(tl_cache[hooks[pattern].replace("hook_pattern", "hook_z")][:, :, H:]) == 0
    # and the answer read where the construction says
    assert _max_rel(con.answer.read(con.layout, theirs), con.answer.read(con.layout, out)) <= tol["out"] * \
        float(out.abs().max() / con.answer.read(con.layout, out).abs().max())


def test_exported_files_reload_and_name_the_rows(tmp_path):
    con, tokens = _construction("newton")
    st, js = export_transformer_lens(con, T, tmp_path / "newton_T5", n_ctx=tokens.shape[1])
    hooked, meta = load_transformer_lens(tmp_path / "newton_T5")
    assert json.loads(js.read_text())["n_loops"] == T
    ours = build_model(con.weights)
    out, cache = ours.run_with_cache(tokens, T)
    _, tl_cache = hooked.run_with_cache(encode(ours, tokens), start_at_layer=0)
    mx = rows(meta, "Mx")
    assert (mx.start, mx.stop) == (con.layout["Mx"].start, con.layout["Mx"].stop)
    at3 = tl_cache[meta["hooks"]["loop.3.hook_state"]][..., mx]
    key = "loop.3.hook_state"
    assert _max_rel(at3, cache[key][..., mx]) <= _tolerances(ours, tokens, T)[key] * \
        float(cache[key].abs().max() / cache[key][..., mx].abs().max())
    assert meta["layout"]["rows"][mx.start].startswith("Mx")
    with pytest.raises(KeyError, match="register='nope' is not in the layout"):
        rows(meta, "nope")


def _trained(**layer) -> AlgoFormer:
    lc = LayerConfig(d_model=16, n_heads=4, d_head=4, d_ff=32, **layer)
    cfg = AlgoFormerConfig(pre=(lc,), loop=(lc, lc), post=(lc,), d_in=5, d_out=1, n_positions=12,
                           final_norm=layer.get("pre_norm", False))
    torch.manual_seed(0)
    model = AlgoFormer(cfg).double().eval()
    with torch.no_grad():
        model.wpe.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(), m.bias.normal_()
    return model


@pytest.mark.parametrize("layer", [dict(activation="gelu", pre_norm=True, scale_scores=True),
                                   dict(activation="relu", mask="causal")])
def test_trained_models_export_with_read_in_norms_and_read_out(layer):
    model = _trained(**layer)
    x = torch.randn(3, 10, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hooked, hooks = to_hooked_transformer(model, 3, n_ctx=12)
    out = model(x, 3)
    with torch.no_grad():
        theirs = hooked(encode(model, x), start_at_layer=0)
    assert theirs.shape == out.shape == (3, 10, 1)
    assert _max_rel(theirs, out) <= _tolerances(model, x, 3)["out"]


@pytest.mark.parametrize("change, reason", [
    (dict(input_injection=True), "input injection"),
    (dict(layer=dict(attention_dtype="float64")), "attention_dtype"),
    (dict(layer=dict(scores="linear")), "linear attention"),
    (dict(mixed_masks=True), "mix masks"),
    (dict(norm_without_final=True), "final LayerNorm"),
])
def test_what_transformer_lens_cannot_express_is_refused_in_one_line(change, reason):
    lc = LayerConfig(d_model=8, n_heads=2, d_head=2, d_ff=8, **change.get("layer", {}))
    if change.get("norm_without_final"):
        lc = LayerConfig(d_model=8, n_heads=2, d_head=2, d_ff=8, pre_norm=True)
    post = (LayerConfig(d_model=8, n_heads=2, d_head=2, d_ff=8, mask="causal"),) if change.get("mixed_masks") else (lc,)
    cfg = AlgoFormerConfig(pre=(lc,), loop=(lc,), post=post, input_injection=change.get("input_injection", False))
    with pytest.raises(NotExportable, match=reason) as e:
        to_hooked_transformer(AlgoFormer(cfg).double(), 2)
    assert "\n" not in str(e.value)


def test_bad_loop_count_is_refused():
    con, _ = _construction("gd")
    with pytest.raises(ValueError, match="n_loops=-1 is invalid"):
        to_hooked_transformer(con, -1)


@pytest.mark.parametrize("model", ["algoformer", "standard"])
def test_a_trained_run_exports_at_its_trained_T(tmp_path, model):
    """A run of ``algoformer.train`` (GPT-2 style: pre-LN, GELU, 1/sqrt(k), causal, read-in and read-out)
    exports through ``from_run`` and gives the run's own predictions."""
    from algoformer import train
    from algoformer.training.prompts import TaskSpec
    from constructions.to_transformer_lens import from_run
    run = tmp_path / model
    assert train.main(["--task", "linear", "--model", model, "--dim", "3", "--n-points", "5", "--width", "16",
                       "--heads", "2", "--layers", "1", "--T", "3", "--delta-T", "2", "--batch-size", "8",
                       "--steps", "2", "--seed", "0", "--quiet", "--out", str(run)]) == 0
    hooked, hooks, ours = from_run(run)
    assert hooked.cfg.normalization_type == "LN" and hooked.cfg.act_fn == "gelu"
    assert hooked.cfg.attention_dir == "causal"
    prompt = TaskSpec("linear", d=3).sample(np.random.default_rng(0), 4, 5)
    x = torch.from_numpy(prompt.tokens.astype(np.float32))
    T = 3 if model == "algoformer" else 0
    out = ours(x, T)
    with torch.no_grad():
        theirs = hooked(encode(ours, x), start_at_layer=0)
    assert _max_rel(theirs, out) <= _tolerances(ours.double(), x.double(), T)["out"] * (U32 / U64)


def test_the_looped_transformer_with_input_injection_is_refused(tmp_path):
    from algoformer import train
    from constructions.to_transformer_lens import from_run
    run = tmp_path / "looped"
    assert train.main(["--task", "linear", "--model", "looped", "--dim", "3", "--n-points", "5", "--width", "16",
                       "--heads", "2", "--T", "3", "--delta-T", "2", "--batch-size", "8", "--steps", "1",
                       "--quiet", "--out", str(run)]) == 0
    with pytest.raises(NotExportable, match="input injection"):
        from_run(run)
