"""The PyTorch AlgoFormer against the numpy reference interpreter (differential tests)."""
import numpy as np
import pytest
import torch

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig
from constructions import reference
from constructions.bridge import build_model, state_dict
from constructions.layout import Layout
from constructions.weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights


def random_layer(rng, D, heads, k, F, mask, scale=0.3):
    hs = tuple(HeadWeights(scale * rng.standard_normal((k, D)), scale * rng.standard_normal((k, D)),
                           scale * rng.standard_normal((D, D))) for _ in range(heads))
    ffn = FFNWeights(scale * rng.standard_normal((F, D)), scale * rng.standard_normal(F),
                     scale * rng.standard_normal((D, F)), scale * rng.standard_normal(D)) if F else None
    return LayerWeights(hs, ffn, mask)


def random_weights(rng, D=6, mask="full"):
    lay = Layout(); lay.add("h", D)
    return AlgoFormerWeights(lay, pre=(random_layer(rng, D, 2, 3, 5, mask),),
                             loop=(random_layer(rng, D, 3, 4, 7, mask), random_layer(rng, D, 1, 2, 0, mask)),
                             post=(random_layer(rng, D, 0, 1, 4, mask),))


@pytest.mark.parametrize("mask", ["full", "causal"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("attention", ["exact", "sdpa"])
def test_model_equals_numpy_reference(rng, mask, dtype, tol, attention):
    w = random_weights(rng, mask=mask)
    x = 0.5 * rng.standard_normal((3, 7, 6))
    want, states = reference.run(w, x, n_loops=4)
    model = build_model(w, dtype=dtype, attention=attention)
    got = model(torch.from_numpy(x).to(dtype), n_loops=4).double().numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * scale


def test_loop_states_are_cached_by_name(rng):
    w = random_weights(rng)
    x = 0.5 * rng.standard_normal((2, 5, 6))
    _, states = reference.run(w, x, n_loops=3)
    model = build_model(w)
    _, cache = model.run_with_cache(torch.from_numpy(x), n_loops=3)
    for t in range(1, 4):
        np.testing.assert_allclose(cache[f"loop.{t}.hook_state"].numpy(), states[t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache["hook_pre"].numpy(), states[0], rtol=1e-12, atol=1e-12)
    assert cache["loop.2.0.hook_pattern"].shape == (2, 3, 5, 5)


def test_fused_and_exact_attention_agree(rng):
    cfg = LayerConfig(d_model=16, n_heads=4, d_head=4, d_ff=32, mask="causal", scale_scores=True)
    torch.manual_seed(0)
    exact = AlgoFormer(AlgoFormerConfig(pre=(cfg,), loop=(cfg,), post=(cfg,))).double()
    fused = AlgoFormer(AlgoFormerConfig(pre=(cfg,), loop=(cfg,), post=(cfg,))).double()
    fused.load_state_dict(exact.state_dict())
    for layer in fused.pre + fused.loop + fused.post:
        layer.attn.cfg = LayerConfig(**{**cfg.__dict__, "attention": "sdpa"})
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(exact(x, 3), fused(x, 3), rtol=1e-12, atol=1e-12)


def test_no_grad_loops_cut_the_graph():
    cfg = LayerConfig(d_model=8, n_heads=2, d_head=4, d_ff=8)
    torch.manual_seed(0)
    model = AlgoFormer(AlgoFormerConfig(pre=(cfg,), loop=(cfg,), post=(cfg,)))
    x = torch.randn(2, 5, 8)
    model(x, 3, no_grad_loops=3).sum().backward()
    assert all(p.grad is None for p in model.loop.parameters())
    model.zero_grad(set_to_none=True)
    model(x, 3, no_grad_loops=2).sum().backward()
    assert all(p.grad is not None for p in model.loop.parameters())
    assert all(p.grad is None for p in model.pre.parameters())   # the graph is cut before the pre


def test_input_injection_adds_pre_output_every_loop():
    cfg = LayerConfig(d_model=4, n_heads=0, d_head=1, d_ff=0)     # identity layers
    model = AlgoFormer(AlgoFormerConfig(pre=(cfg,), loop=(cfg,), post=(cfg,), input_injection=True))
    x = torch.randn(1, 3, 4)
    torch.testing.assert_close(model(x, 3), 4 * x)                  # h = x, then h + x three times


def test_forward_each_loop_matches_forward(rng):
    w = random_weights(rng)
    model = build_model(w)
    x = torch.from_numpy(0.5 * rng.standard_normal((2, 5, 6)))
    each = model.forward_each_loop(x, 4, first=1)
    assert each.shape[0] == 4
    for t in range(1, 5):
        torch.testing.assert_close(each[t - 1], model(x, t))


def test_load_refuses_mismatch_naming_tensor_and_shapes(rng):
    w = random_weights(rng)
    model = build_model(w)
    sd = state_dict(w)
    sd["loop.0.attn.w_q"] = sd["loop.0.attn.w_q"][:, :2]
    with pytest.raises(ValueError, match=r"loop\.0\.attn\.w_q.*\(3, 2, 6\).*\(3, 4, 6\)"):
        model.load_exact(sd)
    sd = state_dict(w); sd.pop("pre.0.ffn.fc1.bias")
    with pytest.raises(ValueError, match="missing.*pre.0.ffn.fc1.bias"):
        model.load_exact(sd)


@pytest.mark.parametrize("kwargs,field", [
    (dict(d_model=0, n_heads=1, d_head=1, d_ff=1), "d_model"),
    (dict(d_model=4, n_heads=-1, d_head=1, d_ff=1), "n_heads"),
    (dict(d_model=4, n_heads=1, d_head=0, d_ff=1), "d_head"),
    (dict(d_model=4, n_heads=1, d_head=1, d_ff=-2), "d_ff"),
    (dict(d_model=4, n_heads=1, d_head=1, d_ff=1, mask="bidirectional"), "mask"),
    (dict(d_model=4, n_heads=1, d_head=1, d_ff=1, activation="tanh"), "activation"),
    (dict(d_model=4, n_heads=1, d_head=1, d_ff=1, dropout=1.5), "dropout"),
    (dict(d_model=4, n_heads=1, d_head=1, d_ff=1, attention="flash"), "attention"),
])
def test_bad_config_names_field_value_and_allowed(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}=.* is invalid: expected"):
        LayerConfig(**kwargs)


def test_bad_loop_counts_are_rejected():
    cfg = LayerConfig(d_model=4, n_heads=1, d_head=1, d_ff=1)
    model = AlgoFormer(AlgoFormerConfig(pre=(), loop=(cfg,), post=()))
    with pytest.raises(ValueError, match="n_loops=-1"):
        model(torch.zeros(1, 2, 4), -1)
    with pytest.raises(ValueError, match="no_grad_loops=5"):
        model(torch.zeros(1, 2, 4), 3, no_grad_loops=5)
    with pytest.raises(ValueError, match="d_model"):
        AlgoFormerConfig(pre=(cfg,), loop=(LayerConfig(d_model=5, n_heads=1, d_head=1, d_ff=1),), post=())
