"""Linear attention (``LayerConfig.scores = "linear"``): the torch model against the numpy interpreter of
Eq. 1 with linear heads, both paths, both masks, float64 and float32; the fused path against the exact
one (values and gradients); and ``algoformer.train --model looped --attention linear``."""
import numpy as np
import pytest
import torch

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig
from algoformer import layer as layer_mod
from algoformer import train as train_cli
from algoformer.training.config import TrainConfig
from algoformer.training.metrics import read_metrics
from constructions import reference
from constructions.bridge import build_model
from constructions.layout import Layout
from constructions.weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights


def linear_layer(rng, D, heads, k, F, mask, scale=0.15):   # cubic per layer: larger scales blow up
    hs = tuple(HeadWeights(scale * rng.standard_normal((k, D)), scale * rng.standard_normal((k, D)),
                           scale * rng.standard_normal((D, D))) for _ in range(heads))
    ffn = FFNWeights(scale * rng.standard_normal((F, D)), scale * rng.standard_normal(F),
                     scale * rng.standard_normal((D, F)), scale * rng.standard_normal(D)) if F else None
    return LayerWeights(hs, ffn, mask, scores="linear")


def linear_weights(rng, D=6, mask="full"):
    lay = Layout(); lay.add("h", D)
    return AlgoFormerWeights(lay, pre=(linear_layer(rng, D, 2, 3, 5, mask),),
                             loop=(linear_layer(rng, D, 3, 4, 7, mask), linear_layer(rng, D, 1, 2, 0, mask)),
                             post=(linear_layer(rng, D, 0, 1, 4, mask),))


@pytest.mark.parametrize("mask", ["full", "causal"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("attention", ["exact", "sdpa"])
def test_linear_model_equals_numpy_eq1(rng, mask, dtype, tol, attention, monkeypatch):
    # 11 tokens, chunks of 4 queries: the fused causal path crosses two chunk boundaries (a partial last chunk)
    monkeypatch.setattr(layer_mod, "LINEAR_CHUNK", 4)
    w = linear_weights(rng, mask=mask)
    x = 0.3 * rng.standard_normal((3, 11, 6))
    want, states = reference.run(w, x, n_loops=3)
    moved = np.abs(states[3] - states[0]).max()
    assert np.isfinite(want).all() and 0.05 < moved < 10 * np.abs(states[0]).max()   # the loop acts, stays bounded
    model = build_model(w, dtype=dtype, attention=attention)
    assert all(l.cfg.scores == "linear" for l in model.pre + model.loop + model.post)
    got = model(torch.from_numpy(x).to(dtype), n_loops=3).double().numpy()
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_linear_differs_from_softmax(rng):
    """The field reaches the model: the same weights with softmax heads give another function."""
    w = linear_weights(rng)
    soft = AlgoFormerWeights(w.layout, *(tuple(LayerWeights(l.heads, l.ffn, l.mask) for l in s)
                                         for s in (w.pre, w.loop, w.post)))
    x = torch.from_numpy(0.3 * rng.standard_normal((2, 5, 6)))
    assert (build_model(w)(x, 2) - build_model(soft)(x, 2)).abs().max() > 1e-3


def test_causal_linear_sees_only_earlier_keys(rng):
    """Changing the last token leaves every earlier output unchanged (both paths)."""
    w = linear_weights(rng, mask="causal")
    x = torch.from_numpy(0.3 * rng.standard_normal((1, 9, 6)))
    y = x.clone(); y[0, -1] += 1.0
    for attention in ("exact", "sdpa"):
        m = build_model(w, attention=attention)
        assert torch.equal(m(x, 2)[0, :-1], m(y, 2)[0, :-1])


@pytest.mark.parametrize("mask", ["full", "causal"])
def test_fused_linear_matches_exact_values_and_gradients(mask, monkeypatch):
    monkeypatch.setattr(layer_mod, "LINEAR_CHUNK", 3)
    cfg = LayerConfig(d_model=16, n_heads=4, d_head=4, d_ff=32, mask=mask, scale_scores=True,
                      pre_norm=True, activation="gelu", scores="linear")
    torch.manual_seed(0)
    exact = AlgoFormer(AlgoFormerConfig(pre=(), loop=(cfg,), post=(), input_injection=True)).double()
    fused = AlgoFormer(AlgoFormerConfig(pre=(), loop=(LayerConfig(**{**cfg.__dict__, "attention": "sdpa"}),),
                                        post=(), input_injection=True)).double()
    fused.load_state_dict(exact.state_dict())
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    outs = []
    for m in (exact, fused):
        out = m(x, 3)
        out.square().sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    for g_exact, g_fused in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g_exact, g_fused, rtol=1e-10, atol=1e-10)


def test_exact_linear_exposes_raw_scores_as_pattern(rng):
    w = linear_weights(rng, mask="causal")
    x = 0.3 * rng.standard_normal((1, 5, 6))
    _, cache = build_model(w).run_with_cache(torch.from_numpy(x), 1)
    hd = w.pre[0].heads[0]
    want = np.tril((x[0] @ hd.query.T) @ (x[0] @ hd.key.T).T)
    np.testing.assert_allclose(cache["pre.0.hook_pattern"][0, 0].numpy(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs,field", [
    (dict(scores="relu"), "scores"),
    (dict(scores="linear", attention="sdpa", dropout=0.1), "dropout"),
])
def test_bad_linear_config_names_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}=.* is invalid: expected"):
        LayerConfig(d_model=4, n_heads=1, d_head=1, d_ff=1, **kwargs)
    LayerConfig(d_model=4, n_heads=1, d_head=1, d_ff=1, scores="linear", attention="exact", dropout=0.1)


def test_train_config_maps_linear_onto_the_fused_linear_path():
    cfg = TrainConfig(task="linear", model="looped", attention="linear", d=3, n_points=5, width=16, heads=2)
    layer = cfg.model_spec().layer_config()
    assert (layer.scores, layer.attention) == ("linear", "sdpa")
    assert TrainConfig(task="linear", model="looped", d=3, n_points=5, width=16, heads=2) \
        .model_spec().layer_config().scores == "softmax"
    with pytest.raises(ValueError, match=r"^attention='flash' is invalid: expected one of sdpa, exact, linear"):
        TrainConfig(task="linear", model="looped", attention="flash", d=3, n_points=5, width=16, heads=2)


def test_looped_linear_attention_trains_below_predict_zero(tmp_path):
    # Noiseless linear regression, d = 2, N = 8, the looped model (Yang et al.) with linear attention on the
    # fused path. Measured over seeds 0-5 at these settings (600 steps): eval after T loops 0.49-0.69 x
    # predict-zero for seeds 0-4; seed 5 stays on the initial plateau (1.00), as the softmax models' tiny
    # widths do (tests/test_training.py). Seed 0: 0.59. The bound sits above the worst of seeds 0-4.
    out = tmp_path / "run"
    args = ["--task", "linear", "--model", "looped", "--attention", "linear", "--dim", "2", "--n-points", "8",
            "--width", "16", "--heads", "2", "--T", "2", "--delta-T", "2", "--batch-size", "256", "--lr", "3e-3",
            "--init-scale", "fan_in", "--curriculum", "false", "--steps", "600", "--eval-every", "600",
            "--log-every", "100", "--threads", "1", "--quiet", "--seed", "0", "--out", str(out)]
    assert train_cli.main(args) == 0
    rows = read_metrics(out / "metrics.jsonl")
    final = [r for r in rows if r["kind"] == "eval"][-1]
    assert np.isfinite(final["loss"]) and final["loss"] < 0.75 * final["zero_loss"]
    assert TrainConfig.from_dict(__import__("json").loads((out / "config.json").read_text())).attention == "linear"
