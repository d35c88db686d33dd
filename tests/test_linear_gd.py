"""The linear-attention GD construction (``constructions.linear_gd``): exact GD up to the derived rounding
bound, in torch (both paths) and in the numpy interpreter; the law of ``verify.linear_gd_law`` as a
property (rates inside their derived interval); ``python -m verify linear-gd`` (bad inputs exit 2)."""
import json
import math

import numpy as np
import pytest

from algoformer.tasks import linear_regression
from constructions import reference
from constructions.linear_gd import linear_gd_construction, rounding_bound
from verify import cli, linear_gd_law as law
from verify.linear_gd import SLACK, _rounded, _two_point, linear_gd_emulated, main
from verify.references import gd_reference

U64, ULD = 2.0 ** -53, float(np.finfo(np.longdouble).eps) / 2


def _problem(seed=0, B=6, N=8, d=4, m=1, noise=0.0):
    p = linear_regression(np.random.default_rng(seed), B, N, d, m, noise)
    S = np.einsum("bni,bnj->bij", p.x, p.x) / N
    return p, 1.0 / np.linalg.eigvalsh(S)[:, -1].max()


def _deviation(traj, exact, B, T):
    ex = np.asarray(exact.iterates, np.float64).reshape(B, T + 1, -1)
    dev = np.linalg.norm(traj.iterates.reshape(ex.shape) - ex, axis=2).max(axis=1)
    return dev, np.linalg.norm(ex, axis=2).max(axis=1)


@pytest.mark.parametrize("attention", ["exact", "sdpa"])
@pytest.mark.parametrize("m,noise", [(1, 0.0), (2, 0.3)])
def test_float64_is_gd_within_the_derived_rounding_bound(attention, m, noise):
    p, eta = _problem(m=m, noise=noise)
    T = 15
    traj = linear_gd_emulated(p, T, eta, "float64", attention=attention)
    dev, scale = _deviation(traj, gd_reference(p, T, eta, np.longdouble), 6, T)
    bound = rounding_bound(p.x, p.y, p.x_test, eta, T, U64) + rounding_bound(p.x, p.y, p.x_test, eta, T, ULD)
    assert np.all(dev <= bound)
    assert np.all(bound / scale < 1e-11)            # the derived bound itself, at these sizes: ~1e-12 relative
    # numpy GD (A-form) obeys the same bound, so the two differ by at most twice it
    ref = gd_reference(p, T, eta)
    diff = np.linalg.norm((traj.iterates - ref.iterates).reshape(6, -1), axis=1)
    assert np.all(diff <= 2 * bound * math.sqrt(T + 1))


def test_float32_is_gd_on_the_data_it_holds_within_the_bound():
    p, eta = _problem(seed=1)
    T = 12
    held = _rounded(p, "float32")
    traj = linear_gd_emulated(p, T, eta, "float32")
    dev, _ = _deviation(traj, gd_reference(held, T, eta, np.longdouble), 6, T)
    assert np.all(dev <= rounding_bound(held.x, held.y, held.x_test, eta, T, 2.0 ** -24)
                  + rounding_bound(held.x, held.y, held.x_test, eta, T, ULD))


def test_numpy_interpreter_of_the_weights_is_gd():
    """The proof checked without torch: Eq. 1 with linear heads (constructions.reference) on the weights."""
    p, eta = _problem(seed=2, m=2)
    T = 10
    con = linear_gd_construction(4, 8, eta, m=2)
    _, states = reference.run(con.weights, con.encode(p.x, p.y, p.x_test), T)
    got = np.stack([con.iterate.read(con.layout, h) for h in states], 1)
    ref = gd_reference(p, T, eta, np.longdouble)
    dev, scale = _deviation(type(ref)(got, ref.predictions), ref, 6, T)
    assert np.all(dev <= rounding_bound(p.x, p.y, p.x_test, eta, T, U64) + rounding_bound(p.x, p.y, p.x_test, eta, T, ULD))


def test_loop_maps_the_layout_onto_itself_and_the_test_token_is_no_key():
    p, eta = _problem(seed=3)
    con = linear_gd_construction(4, 8, eta)
    lay, h0 = con.layout, con.encode(p.x, p.y, p.x_test)
    head = con.weights.loop[0].heads[0]
    assert np.all(h0[:, -1] @ head.key.T == 0)                       # the test token's key is exactly 0
    _, states = reference.run(con.weights, h0, 5)
    for name in ("x", "xq", "y"):
        assert np.array_equal(states[-1][:, :, lay[name]], h0[:, :, lay[name]])
    assert np.array_equal(states[0][:, :, lay["r"]], -h0[:, :, lay["y"]])   # TF_pre: r = -y exactly
    assert con.weights.loop[0].scores == "linear" and len(con.weights.loop[0].heads) == 1


def test_bad_construction_arguments_name_the_parameter():
    with pytest.raises(ValueError, match=r"^eta=-1.0 is invalid"):
        linear_gd_construction(3, 5, -1.0)
    with pytest.raises(ValueError, match=r"^N=0 is invalid"):
        linear_gd_construction(3, 0, 0.1)
    p, eta = _problem()
    with pytest.raises(ValueError, match=r"^eta=.* is invalid for the bound"):
        rounding_bound(p.x, p.y, p.x_test, 3 * eta, 5, U64)
    with pytest.raises(ValueError, match=r"N=9 samples, but the construction was built for N=8"):
        linear_gd_construction(4, 8, eta).encode(np.zeros((1, 9, 4)), np.zeros((1, 9, 1)), np.zeros((1, 4)))


# -- the law -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [2.0, 4.0, 8.0])
def test_measured_rate_lies_in_its_derived_interval_and_the_claim_bounds_it(ratio):
    """Derived, not fitted: between loop 1 and the last loop above 100 x the floor, the rate of
    ||w_T - w_LS|| lies in [-log rho, -log rho + log(||c|| / |c_min|) / (T2 - 1)] (``linear_gd_law``), and with
    eta in [1/(2L), 1/L] the claim exp(-T / (2 kappa)) bounds e_T, so rate x 2 kappa >= 2 eta L >= 1."""
    d = 6
    p = linear_regression(np.random.default_rng(7), 8, int(ratio * d), d, 1)
    sp = law.spectrum(p.x, p.y)
    eta = 1.0 / sp.lam[:, -1].max()
    T = 250
    for err in (law.gd_errors(p.x, p.y, sp, eta, T),
                law.errors_from_tokens(p.x, p.y, sp, linear_gd_emulated(p, T, eta, "float64").iterates[:, :, :-1, 0])):
        two = _two_point(err, law.floor_of(err), sp, eta)
        checked = np.isfinite(two["rate"])
        assert checked.sum() >= 6
        assert np.all(two["inside"][checked]) and np.all(two["claim"][checked])
        assert np.all(two["rate"][checked] * 2 * sp.kappa[checked] >= 2 * (eta * sp.lam[checked, -1]) * (1 - SLACK))


def test_claim_fails_when_the_step_is_below_half_of_one_over_L():
    """The check can fail: at eta = 1/(4L) the rate is ~1/(4 kappa) and exp(-T/(2 kappa)) no longer bounds e_T."""
    p = linear_regression(np.random.default_rng(8), 6, 24, 6, 1)
    sp = law.spectrum(p.x, p.y)
    eta = 0.25 / sp.lam[:, -1].max()
    err = law.gd_errors(p.x, p.y, sp, eta, 300)
    two = _two_point(err, law.floor_of(err), sp, eta)
    assert np.all(two["inside"][np.isfinite(two["rate"])])
    assert not two["claim"].any()


def test_closed_form_is_numpy_gd_above_the_floor():
    p = linear_regression(np.random.default_rng(9), 5, 20, 5, 1)
    sp = law.spectrum(p.x, p.y)
    eta = 1.0 / sp.lam[:, -1].max()
    exact, gd = law.exact_errors(sp, eta, 100), law.gd_errors(p.x, p.y, sp, eta, 100)
    big = exact > 1e-6
    assert big.sum() > 50 and np.all(np.abs(gd - exact)[big] <= 1e-6 * exact[big])
    assert np.all(exact <= law.contraction(sp, eta)[:, None] ** np.arange(101) * (1 + 1e-12))


# -- the command line ----------------------------------------------------------------------------------------
TINY = ["--N", "8", "--d", "3", "--problems", "3", "--iters", "5", "--ratios", "2,6", "--law-iters", "120"]


def test_cli_runs_writes_json_and_plot_and_prints_config_first(tmp_path, capsys):
    js, png = tmp_path / "out.json", tmp_path / "law.png"
    assert cli.main(["linear-gd", *TINY, "--json", str(js), "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("configuration: algorithm=linear-gd, N=8, d=3, iters=5, problems=3, seed=0")
    assert "dtypes=['float64', 'float32']" in out[0] and "device=cpu" in out[0]
    data = json.loads(js.read_text())
    assert data["ok"] is True and {r["construction"] for r in data["step"]} == {"linear", "softmax"}
    assert [g["ratio"] for g in data["law"]] == [2.0, 6.0] and len(data["law"][0]["curves"]["float64"]) == 121
    assert png.stat().st_size > 10_000
    assert any(l.strip().startswith("float64: linear construction = numpy GD") for l in out)


def test_cli_is_seeded(capsys):
    runs = []
    for _ in range(2):
        assert main([*TINY, "--dtype", "float64", "--quiet"]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1]


def test_verify_help_lists_linear_gd(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "linear-gd" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--iters", "-1"], "--iters"),
    (["--ratios", "0.5"], "--ratios"),
    (["--ratios", "two"], "--ratios"),
    (["--ratios", "1.1", "--d", "3"], "every n/d must give N > d"),
    (["--step-scale", "2"], "--step-scale"),
    (["--dtype", "bfloat16"], "--dtype"),
    (["--law-iters", "10", "--iters", "20"], "--law-iters"),
    (["--plot", "/nonexistent-dir/law.png"], "--plot"),
    (["--plot", "law.txt"], "--plot"),
    (["--json", "/"], "--json"),
    (["--it", "3"], "unrecognized arguments"),
])
def test_cli_bad_arguments_exit_2_with_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["linear-gd", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                                   # checked before any work
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("python -m verify linear-gd: error:", "python -m verify: error:")) and needle in lines[0]
