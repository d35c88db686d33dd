"""Export / import round trips (constructions.export): constructed and trained weights as
safetensors plus a JSON layout."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from constructions.bridge import build_model, state_dict
from constructions.export import (export_construction, export_model, load_construction, load_model,
                                  read_meta, token_roles)
from verify.algorithms import ALGORITHMS, Options
from verify.emulate import emulate
from verify.sweep import auto_temps

OPTS = Options(N=6, d=3, problems=4)


def _construction(name: str):
    algo = ALGORITHMS[name]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps("odd", 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    return algo.build(OPTS, step, temps, "odd"), problem


@pytest.mark.parametrize("name", ["gd", "newton"])
def test_construction_round_trip_identical_outputs(tmp_path, name):
    con, problem = _construction(name)
    export_construction(con, tmp_path / name)
    fresh, meta = load_model(tmp_path / name)
    original = build_model(con.weights)
    tokens = torch.from_numpy(con.encode(problem.x, problem.y, problem.x_test))
    assert fresh.state_dict().keys() == original.state_dict().keys()
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in fresh.state_dict().items())
    # Identical weights; the outputs may still differ in the last bits between two model instances
    # (BLAS kernels can depend on memory alignment) and the e^C / c heads amplify that: compare tightly.
    torch.testing.assert_close(fresh(tokens, 4), original(tokens, 4), rtol=1e-8, atol=1e-8)
    back = load_construction(tmp_path / name)
    a, b = state_dict(con.weights), state_dict(back.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    e1, e2 = emulate(con, problem, 3), emulate(back, problem, 3)
    np.testing.assert_allclose(e2.predictions, e1.predictions, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(e2.iterates, e1.iterates, rtol=1e-8, atol=1e-8)
    assert np.array_equal(back.pos, con.pos)


@pytest.mark.parametrize("name, answer_token", [("gd", 2 * OPTS.N + 1), ("newton", 2 * OPTS.N)])
def test_json_names_rows_and_answer_token(tmp_path, name, answer_token):
    con, _ = _construction(name)
    _, js = export_construction(con, tmp_path / name)
    meta = json.loads(js.read_text())
    lay = meta["layout"]
    assert lay["dim"] == con.layout.dim == len(lay["rows"])
    assert lay["rows"][:3] == ["x[0]", "x[1]", "x[2]"] and lay["rows"][-1] == "answer"
    assert lay["blocks"]["answer"] == [con.layout["answer"].start, con.layout["answer"].stop]
    ans = meta["readout"]["answer"]
    assert ans["register"] == "answer" and ans["tokens"] == [answer_token]
    assert meta["prompt"]["token_roles"][answer_token] == ("sink" if name == "gd" else "x_test")
    assert meta["prompt"]["n_tokens"] == 2 * OPTS.N + 2 == len(meta["prompt"]["token_roles"])
    assert meta["layers"]["loop"][0]["heads"] == [h.name for h in con.weights.loop[0].heads]


def test_safetensors_file_is_self_describing(tmp_path):
    con, _ = _construction("gd")
    st, _ = export_construction(con, tmp_path / "gd")
    with safe_open(str(st), "pt") as f:
        meta = json.loads(f.metadata()["algoformer"])
        keys = set(f.keys())
        assert f.get_tensor("loop.0.attn.w_q").dtype == torch.float64
    assert meta["readout"]["answer"]["register"] == "answer"
    assert keys == set(build_model(con.weights).state_dict())


def test_trained_model_round_trip(tmp_path):
    from algoformer.training.models import ModelSpec, build_model as build_trained
    torch.manual_seed(0)
    model = build_trained(ModelSpec("algoformer", width=16, heads=2, attention="exact"), 3, 1, 12).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 12, 3)
    model(x, 2).pow(2).mean().backward()      # one step: weights no longer the initialisation
    opt.step()
    readout = {"readout": {"kind": "decoder", "prediction_of_y_i_at_token": "2(i-1)"}}
    export_model(model, tmp_path / "trained", extra=readout)
    fresh, meta = load_model(tmp_path / "trained")
    assert fresh.cfg == model.cfg
    assert torch.equal(fresh(x, 3), model(x, 3))
    assert meta["layout"] is None and meta["readout"] == readout["readout"]
    with pytest.raises(ValueError, match="holds no layout"):
        load_construction(tmp_path / "trained")


def test_training_run_exports_with_its_readout(tmp_path):
    from algoformer.training.config import TrainConfig
    from algoformer.training.models import build_model as build_trained
    from constructions.export import export_run
    cfg = TrainConfig(task="linear", d=3, n_points=5, width=16, heads=2, T=2, delta_T=1, device="cpu")
    torch.manual_seed(1)
    model = build_trained(cfg.model_spec(), cfg.d, 1, cfg.task_spec().n_tokens(cfg.n_points))
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 7}, run / "ckpt.pt")
    export_run(run, tmp_path / "out")
    fresh, meta = load_model(tmp_path / "out")
    assert meta["step"] == 7 and meta["training"]["n_points"] == 5
    assert meta["readout"]["answer"]["tokens"] == [0, 2, 4, 6, 8]
    assert meta["prompt"]["token_roles"] == ["x_1", "y_1", "x_2", "y_2", "x_3", "y_3", "x_4", "y_4", "x_5", "y_5"]
    x = torch.randn(2, 10, 3)
    assert torch.equal(fresh(x, 2), model.eval()(x, 2))


def test_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="not an algoformer-export"):
        read_meta(tmp_path / "x")


def test_token_roles():
    assert token_roles(2) == ["x_1", "y_1", "x_2", "y_2", "x_test", "sink"]


def test_a_class_named_in_an_export_is_never_imported_from_outside_the_package(tmp_path, monkeypatch):
    """Loading is reading: an export that names a module (``construction.class``) must not make the
    loader import it, since importing runs the module's code."""
    con, _ = _construction("gd")
    _, js = export_construction(con, tmp_path / "gd")
    meta = json.loads(js.read_text())
    meta["construction"]["class"] = "evil_plugin_module:Construction"
    js.write_text(json.dumps(meta))
    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom constructions.prompt import Construction\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    back = load_construction(tmp_path / "gd")
    assert not marker.exists()
    assert type(back).__name__ == "Construction"
