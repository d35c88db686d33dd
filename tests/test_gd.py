"""Lemma A.2 and the GD AlgoFormer, including the defects of the printed construction."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from algoformer.tasks import linear_regression
from constructions import reference
from constructions.bridge import build_model
from constructions.gd import gd_construction, gd_step_layer, move
from constructions.linearise import Temperature, bilinear_heads, error_bound, head_weights, is_mirror
from constructions.weights import LayerWeights
from verify.algorithms import GD, Options
from verify.emulate import emulate, relative_error
from verify.references import gd_reference
from verify.sweep import auto_temps


def setup(seed, N=8, d=3, m=2, theta=1e-3, C=30.0, variant="odd"):
    p = linear_regression(np.random.default_rng(seed), 4, N, d, m)
    a_max = np.abs(np.einsum("bni,bmi->bnm", np.concatenate([p.x, p.x_test[:, None]], 1), p.x)).max() / N
    eta = 0.5 / np.linalg.eigvalsh(np.einsum("bni,bnj->bij", p.x, p.x) / N)[:, -1].max()
    temp = Temperature(C, theta / a_max)
    con = gd_construction(d, N, eta, temp, m, variant)
    return p, con, eta, temp, a_max


def test_pre_forms_the_registers_exactly():
    p, con, *_ = setup(0)
    lay, N = con.layout, 8
    h = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["r"]], -p.y)             # A_0 x_i - y_i, A_0 = 0
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["r"]], 0.0)               # y-tokens silenced
    np.testing.assert_array_equal(h[:, 2 * N:, lay["r"]], 0.0)                  # test token and sink
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["xN"]], p.x * (1.0 / N))
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["xN"]], -p.x * (1.0 / N))  # mirrored keys
    np.testing.assert_array_equal(h[:, 2 * N:, lay["xN"]], 0.0)                 # test token and sink


@given(seed=st.integers(0, 10**6), log_theta=st.floats(-4, -1),
       variant=st.sampled_from(["paper", "odd", "richardson4", "odd+mirror", "richardson6+mirror", "sinh4", "sinh8"]),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_one_step_matches_numpy_within_the_bound(seed, log_theta, variant, dtype):
    C = 0.0 if is_mirror(variant) else 30.0 if dtype == torch.float64 else 18.0
    p, con, eta, temp, a_max = setup(seed, theta=10 ** log_theta, C=C, variant=variant)
    lay, N = con.layout, 8
    h0 = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    model = build_model(con.weights, dtype=dtype)
    h1 = model.run_loop(torch.from_numpy(h0).to(dtype), 1).double().numpy()
    ref = gd_reference(p, 1, eta).iterates[:, 1]                               # A_1 x_i - y_i, A_1 x_test
    got = con.iterate.read(lay, h1)
    s_v = eta * np.abs(h0[:, :, lay["r"]]).sum(axis=1).max()
    u = 2.0 ** -53 if dtype == torch.float64 else 2.0 ** -24
    bound = error_bound(variant, temp, 2 * N + 2, a_max, s_v, u)["total"]
    assert np.abs(got - ref).max() <= bound


def test_loop_layer_maps_its_layout_onto_itself():
    """Defect 3 of the printed Lemma A.2: its output drops the x/N rows. Here every register but r
    leaves the loop bit for bit, so the layer can be applied again."""
    p, con, *_ = setup(1)
    lay = con.layout
    h0 = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    h1 = reference.apply_stack(con.weights.loop, h0)
    for name in lay.names:
        if name != "r":
            np.testing.assert_array_equal(h1[:, :, lay[name]], h0[:, :, lay[name]], err_msg=name)
    assert np.abs(h1[:, :, lay["r"]] - h0[:, :, lay["r"]]).max() > 1e-3


def test_printed_output_without_x_over_N_cannot_be_looped():
    p, con, eta, temp, _ = setup(2)
    lay = con.layout
    h1 = reference.apply_stack(con.weights.loop, reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test)))
    printed = h1.copy(); printed[:, :, lay["xN"]] = 0.0                  # the printed output layout
    again = reference.apply_stack(con.weights.loop, printed)
    ref = gd_reference(p, 2, eta).iterates
    step_made = np.abs(ref[:, 2] - ref[:, 1]).max()
    assert np.abs(again[:, :, lay["r"]] - printed[:, :, lay["r"]]).max() < 1e-6 * step_made   # no GD step
    ours = con.iterate.read(lay, reference.apply_stack(con.weights.loop, h1))
    assert np.abs(ours - ref[:, 2]).max() < 1e-4 * step_made


def test_printed_value_sign_climbs_the_loss():
    """Defect 2: the printed W_V = e^C r (constant-cancel heads, no -eta/c) adds +c grad L x to r:
    A moves up the gradient, and no per-row FFN scaling of r can turn r + c grad L x into
    r - eta grad L x."""
    p, con, eta, temp, _ = setup(3)
    lay, N = con.layout, 8
    d = lay.size("x")
    Q = np.zeros((d, lay.dim)); Q[:, lay["x"]] = np.eye(d)
    K = np.zeros((d, lay.dim)); K[:, lay["xN"]] = np.eye(d)
    printed_heads = tuple(
        type(hd)(hd.query, hd.key, hd.value * temp.c, hd.name)          # value e^C r: undo the 1/c
        for hd in bilinear_heads(lay, Q, K, move(lay, "r", "r", 1.0), temp, "paper"))
    h0 = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    h1 = reference.apply_layer(LayerWeights(printed_heads), h0)
    r0, r1 = h0[:, 0:2 * N:2, lay["r"]], h1[:, 0:2 * N:2, lay["r"]]
    assert (np.sum(r1 ** 2, axis=(1, 2)) > np.sum(r0 ** 2, axis=(1, 2))).all()   # the loss went up
    target = gd_reference(p, 1, eta).iterates[:, 1, :N]                        # A_1 x_i - y_i
    mu = np.sum(r1 * target) / np.sum(r1 * r1)                                 # best per-row scaling
    assert np.linalg.norm(mu * r1 - target) > 0.1 * np.linalg.norm(target - r0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-2)])
def test_full_pipeline_matches_numpy_after_20_loops(dtype, tol):
    opts = Options(N=10, d=4, problems=8, seed=5)
    p = GD.draw(np.random.default_rng(5), opts)
    eta = GD.choose_step(p)
    temps = auto_temps("odd", 22, GD.score_bounds(p, eta), dtype)
    con = GD.build(opts, eta, temps, "odd")
    emu, ref = emulate(con, p, 20, dtype), gd_reference(p, 20, eta)
    assert relative_error(emu.iterates[:, -1], ref.iterates[:, -1]).max() < tol
    assert relative_error(emu.predictions[:, -1], ref.predictions[:, -1]).max() < tol
    # the answer slot holds A_T x_test, which is also the iterate's test-token entry
    np.testing.assert_allclose(emu.predictions[:, -1], emu.iterates[:, -1, -1], rtol=0, atol=0)


def test_head_budget_is_the_papers_two_heads_by_default():
    _, con, *_ = setup(0, C=0.0, variant="odd+mirror")
    assert len(con.weights.loop[0].heads) == 2 == len(head_weights("odd+mirror"))


def test_mirror_scheme_beats_the_sink_at_the_same_heads():
    """The mirror scheme drops the sink and its C: in float32 the two-head odd pair gains several x."""
    opts = Options(N=10, d=4, problems=8, seed=9)
    p = GD.draw(np.random.default_rng(9), opts)
    eta = GD.choose_step(p)
    ref = gd_reference(p, 10, eta)
    err = {}
    for v in ("odd", "odd+mirror"):
        con = GD.build(opts, eta, auto_temps(v, 22, GD.score_bounds(p, eta), torch.float32), v)
        err[v] = relative_error(emulate(con, p, 10, torch.float32).iterates[:, -1], ref.iterates[:, -1]).max()
    assert err["odd+mirror"] < 0.5 * err["odd"]


# -- mirrored values (the sinh variants) -------------------------------------------------------------

def test_mirrored_value_registers_are_exact_mirrors_before_and_after_every_loop():
    """The sinh heads answer a symmetric part of the values with ~ part / c per loop (measured: 1e27
    after 20 loops at theta = 0.1 when the y-token updated its own copy): the second loop layer must
    re-form the mirror exactly, in float32 as in float64."""
    p, con, *_ = setup(1, theta=1e-2, C=0.0, variant="sinh4")
    lay, N = con.layout, 8
    assert len(con.weights.loop) == 2
    h = reference.apply_stack(con.weights.pre, con.encode(p.x, p.y, p.x_test))
    np.testing.assert_array_equal(h[:, 1:2 * N:2, lay["xq"]], -h[:, 0:2 * N:2, lay["xq"]])
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["xq"]], p.x)
    np.testing.assert_array_equal(h[:, 2 * N, lay["xq"]], p.x_test)
    np.testing.assert_array_equal(h[:, 0:2 * N:2, lay["rv"]], -p.y)
    np.testing.assert_array_equal(h[:, 2 * N:, lay["rv"]], 0.0)
    for dtype in (torch.float64, torch.float32):
        model = build_model(con.weights, dtype=dtype)
        ht = torch.from_numpy(h).to(dtype)
        for t in range(1, 6):
            ht = model.run_loop(ht, t)
            rv = ht[:, :, lay["rv"]]
            assert torch.equal(rv[:, 1:2 * N:2], -rv[:, 0:2 * N:2])               # bit for bit
            assert torch.equal(rv[:, 2 * N:], torch.zeros_like(rv[:, 2 * N:]))   # test token and sink


def test_sinh4_has_order_four_with_the_papers_two_heads():
    """Two heads and mirrored values: the GD error falls as theta^4 (odd+mirror, the same two heads
    with zero-value mirrors: theta^2)."""
    errs = {}
    for variant in ("sinh4", "odd+mirror"):
        e = []
        for theta in (1e-1, 1e-2):
            p, con, eta, temp, a_max = setup(2, theta=theta, C=0.0, variant=variant)
            assert sum(len(layer.heads) for layer in con.weights.loop if layer.name == "gd-step") == 2
            emu = emulate(con, p, 5, torch.float64)
            e.append(relative_error(emu.iterates[:, -1], gd_reference(p, 5, eta).iterates[:, -1]).max())
        errs[variant] = np.log10(e[0] / e[1])           # decades gained per decade of theta
    assert 3.6 < errs["sinh4"] < 4.4 and 1.8 < errs["odd+mirror"] < 2.2


def test_sinh_variants_refused_where_values_are_not_mirrored():
    """The GD loop inside Theorem 3.1's construction has no mirrored-value registers, and the
    decoder's loop is already a mirrored mean: both refuse sinh with the reason."""
    from constructions.causal_gd import causal_gd_construction
    from constructions.representation import representation_construction
    from verify.algorithms_representation import representation_phi
    with pytest.raises(ValueError, match="sinh4.*mirrored values"):
        representation_construction(representation_phi(3), 8, 0.1, Temperature(0.0, 1e-2), variant="sinh4")
    with pytest.raises(ValueError, match="sinh4.*mirrored mean"):
        causal_gd_construction(3, 8, 0.1, {"mean": Temperature(0.0, 1e-2), "post": Temperature(20.0, 1e-2)}, "sinh4")
