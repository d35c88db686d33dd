"""``export_run`` on a run started from a construction (``train --init-from``): the fine-tuned model
comes back with ``load_model`` and the construction's own prompt with ``load_construction``."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from algoformer import train as train_cli
from algoformer.evaluate import open_run
from constructions.export import export_run, load_construction, load_model
from constructions.initialise import split

D, N, T = 3, 8, 3


@pytest.mark.parametrize("name, kind, answers", [("gd", "causal", list(range(1, 2 * N, 2))),
                                                 ("newton", "encoder", [2 * (N - 1)])])
def test_an_initialised_run_exports_and_loads_back(name, kind, answers, tmp_path):
    run = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_cli.main(["--task", "linear", "--init-from", name, "--dim", str(D), "--n-points", str(N),
                               "--T", str(T), "--lr", "1e-6", "--steps", "2", "--batch-size", "8", "--quiet",
                               "--eval-every", "0", "--threads", "1", "--out", str(run)]) == 0
    st, js = export_run(run, tmp_path / "out" / name)
    meta = json.loads(js.read_text())
    assert meta["step"] == 2 and meta["training"]["init_from"] == name and meta["notes"]["init_from"] == name
    roles = meta["prompt"]["token_roles"]
    assert meta["prompt"]["kind"] == kind and meta["prompt"]["n_tokens"] == len(roles) == 2 * (N - 1) + 2
    assert meta["readout"]["answer"]["tokens"] == answers
    assert [roles[t] for t in answers] == ([f"x_{i}" for i in range(1, N)] + ["x_test"] if kind == "causal"
                                           else ["x_test"])

    r = open_run(run)
    prompt = r.cfg.task_spec().sample(np.random.default_rng(5), 4, N)
    enc = r.encode(prompt)
    con = load_construction(tmp_path / "out" / name)
    p = split(prompt)
    assert np.array_equal(con.encode(p.x, p.y, p.x_test).astype(np.float32), enc.tokens)
    model, _ = load_model(tmp_path / "out" / name)
    tokens = torch.as_tensor(enc.tokens)
    with torch.no_grad():
        assert torch.equal(model(tokens, T), r.model(tokens, T))         # the fine-tuned weights, exactly
    assert np.array_equal(np.flatnonzero(enc.weight), answers)           # where the run was trained to answer


@pytest.mark.parametrize("path", ["", ".", "out/.."])
def test_export_path_must_name_a_file_stem(path, tmp_path, monkeypatch):
    from algoformer.training.models import ModelSpec, build_model
    from constructions.export import export_model
    monkeypatch.chdir(tmp_path)
    model = build_model(ModelSpec("algoformer", width=8, heads=1), 2, 1, 4)
    with pytest.raises(ValueError, match="is invalid: expected a file stem"):
        export_model(model, path)
    assert list(tmp_path.iterdir()) == []


def test_export_path_naming_a_folder_is_refused(tmp_path):
    from algoformer.training.models import ModelSpec, build_model
    from constructions.export import export_model
    (tmp_path / "m.safetensors").mkdir()
    model = build_model(ModelSpec("algoformer", width=8, heads=1), 2, 1, 4)
    with pytest.raises(ValueError, match="is a folder"):
        export_model(model, tmp_path / "m")
    assert not (tmp_path / "m.json").exists()
