"""A damaged export (constructions.export_check) gives one line naming the file and the tensor.

Corruptions: the safetensors file cut at seeded random bytes (the tensor named is derived here from
the header independently: the first, by offset, whose bytes reach past the cut), one tensor's shape
changed in the header (same byte count, and a different one), a tensor renamed, a NaN written into the
data, the JSON cut at seeded random characters, the JSON's layout / read-out / model_config altered.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from constructions.export import export_construction, load_construction, load_model
from constructions.export_check import ExportError
from verify.algorithms import ALGORITHMS, Options
from verify.sweep import auto_temps

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
OPTS = Options(N=4, d=2, problems=2)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    algo = ALGORITHMS["gd"]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps("odd", 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    stem = tmp_path_factory.mktemp("export") / "gd"
    export_construction(algo.build(OPTS, step, temps, "odd"), stem)
    return stem


def _copy(export: Path, tmp_path: Path, st: bytes | None = None, js: str | None = None) -> Path:
    stem = tmp_path / "bad"
    (tmp_path / "bad.safetensors").write_bytes(export.with_suffix(".safetensors").read_bytes() if st is None else st)
    (tmp_path / "bad.json").write_text(export.with_suffix(".json").read_text() if js is None else js)
    return stem


def _split(data: bytes) -> tuple[int, dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n]), data[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _refused(stem: Path, file_suffix: str, *words: str) -> str:
    with pytest.raises(ExportError) as info:
        load_model(stem)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    assert str(stem.with_suffix(file_suffix)) in msg and all(w in msg for w in words), msg
    return msg


def test_the_intact_export_loads(export):
    model, meta = load_model(export)
    assert meta["layout"]["dim"] == model.cfg.d_model
    assert load_construction(export).layout.dim == model.cfg.d_model


@pytest.mark.parametrize("seed", range(8))
def test_cut_safetensors_names_the_file_and_the_tensor(export, tmp_path, seed):
    data = export.with_suffix(".safetensors").read_bytes()
    n, header, _ = _split(data)
    meta = header.pop("__metadata__")
    # seeds 0-1 cut inside the header's tensor entries, the rest inside the data
    first_entry = data.index(b'{"dtype"', 8 + len(json.dumps({"__metadata__": meta}, separators=(",", ":"))) - 1)
    lo, hi = (first_entry, 8 + n) if seed < 2 else (8 + n, len(data))
    cut = int(np.random.default_rng(seed).integers(lo, hi))
    stem = _copy(export, tmp_path, st=data[:cut])
    msg = _refused(stem, ".safetensors", "truncated")
    if cut >= 8 + n:
        c = cut - 8 - n
        want = min((e["data_offsets"][0], name) for name, e in header.items() if e["data_offsets"][1] > c)[1]
        assert f"tensor {want!r} needs data bytes" in msg, (cut, msg)
    else:        # the last entry whose name '"NAME":{' lies whole before the cut: the cut is in it or after it
        starts = {name: data.index(f'"{name}":{{'.encode()) for name in header}
        want = max((i, name) for name, i in starts.items() if i + len(name) + 4 <= cut)[1]
        inside = cut <= data.index(b"}", starts[want])
        assert f"the cut falls {'in' if inside else 'after'} the entry of tensor {want!r}" in msg, (cut, msg)


def _edit_header(export: Path, tmp_path: Path, edit) -> Path:
    n, header, body = _split(export.with_suffix(".safetensors").read_bytes())
    edit(header)
    return _copy(export, tmp_path, st=_join(header, body))


def _two_d(header: dict) -> str:
    return next(k for k, e in sorted(header.items()) if k != "__metadata__" and len(e["shape"]) == 2
                and e["shape"][0] != e["shape"][1])


def test_shape_changed_same_bytes_is_named_against_the_config(export, tmp_path):
    n, header, _ = _split(export.with_suffix(".safetensors").read_bytes())
    name = _two_d(header)
    a, b = header[name]["shape"]
    stem = _edit_header(export, tmp_path, lambda h: h[name].update(shape=[b, a]))
    _refused(stem, ".safetensors", f"tensor {name!r} has shape {(b, a)}", f"gives {(a, b)}")


def test_shape_changed_other_bytes_is_named(export, tmp_path):
    n, header, _ = _split(export.with_suffix(".safetensors").read_bytes())
    name = _two_d(header)
    stem = _edit_header(export, tmp_path, lambda h: h[name]["shape"].__setitem__(0, h[name]["shape"][0] + 1))
    _refused(stem, ".safetensors", f"tensor {name!r}", "needs", "bytes")


def test_renamed_tensor_is_named(export, tmp_path):
    n, header, _ = _split(export.with_suffix(".safetensors").read_bytes())
    name = _two_d(header)
    stem = _edit_header(export, tmp_path, lambda h: h.__setitem__(name + "_x", h.pop(name)))
    _refused(stem, ".safetensors", f"tensor {name!r}", "is missing")


def test_nan_in_the_data_is_named(export, tmp_path):
    data = bytearray(export.with_suffix(".safetensors").read_bytes())
    n, header, _ = _split(bytes(data))
    name = _two_d(header)
    start = 8 + n + header[name]["data_offsets"][0]
    data[start:start + 8] = struct.pack("<d", float("nan"))       # the export is float64
    stem = _copy(export, tmp_path, st=bytes(data))
    _refused(stem, ".safetensors", f"tensor {name!r}", "non-finite")


@pytest.mark.parametrize("seed", range(4))
def test_cut_json_names_the_file(export, tmp_path, seed):
    text = export.with_suffix(".json").read_text()
    cut = int(np.random.default_rng(100 + seed).integers(1, len(text.rstrip())))
    _refused(_copy(export, tmp_path, js=text[:cut]), ".json", "is not valid JSON")


def _edit_json(export: Path, tmp_path: Path, edit) -> Path:
    meta = json.loads(export.with_suffix(".json").read_text())
    edit(meta)
    return _copy(export, tmp_path, js=json.dumps(meta))


def _last_block(meta: dict) -> str:
    return list(meta["layout"]["blocks"])[-1]


JSON_EDITS = {
    "block-outside-width": (lambda m: m["layout"]["blocks"][_last_block(m)].__setitem__(1, m["layout"]["dim"] + 3),
                            ["lies outside the width"]),
    "block-overlaps": (lambda m: m["layout"]["blocks"]["y"].__setitem__(0, m["layout"]["blocks"]["y"][0] - 1),
                       ["layout block 'y'", "previous block ends"]),
    "dim": (lambda m: m["layout"].__setitem__("dim", m["layout"]["dim"] - 1), ["layout dim=", "expected the width"]),
    "rows": (lambda m: m["layout"]["rows"].pop(), ["layout rows is invalid"]),
    "readout-rows": (lambda m: m["readout"]["answer"].__setitem__("rows", [0, 1]), ["readout 'answer': rows"]),
    "readout-token": (lambda m: m["readout"]["answer"].__setitem__("tokens", [-1]),
                      ["readout 'answer': tokens [-1]", "integers >= 0"]),
    "heads": (lambda m: m["layers"]["loop"][0]["heads"].pop(), ["layers['loop'][0] does not match"]),
    "pos": (lambda m: m["prompt"]["pos"][0].pop(), ["prompt pos is invalid"]),
    "model-config": (lambda m: m["model_config"]["loop"][0].__setitem__("mask", "causal"),
                     ["model_config differs", "bad.safetensors"]),
    "model-config-field": (lambda m: m["model_config"].__setitem__("d_in", -4), ["model_config is invalid", "d_in"]),
    "format": (lambda m: m.__setitem__("format", "other"), ["not an algoformer-export file"]),
}


@pytest.mark.parametrize("name", list(JSON_EDITS))
def test_altered_json_is_one_line(export, tmp_path, name):
    edit, words = JSON_EDITS[name]
    _refused(_edit_json(export, tmp_path, edit), ".json", *words)


def test_check_cli_exits_2_with_one_line(export, tmp_path):
    data = export.with_suffix(".safetensors").read_bytes()
    stem = _copy(export, tmp_path, st=data[:len(data) - 100])
    r = subprocess.run([sys.executable, "-m", "constructions.export_cli", "check", str(stem)], env=ENV,
                       capture_output=True, text=True, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, r.stderr[-2000:]
    assert str(stem.with_suffix(".safetensors")) in err and "tensor '" in err
    ok = subprocess.run([sys.executable, "-m", "constructions.export_cli", "check", str(export)], env=ENV,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "every check passed" in ok.stdout, ok.stderr[-2000:]


@pytest.mark.parametrize("name", ["newton", "representation", "ar", "decoder-gd", "cot"])
def test_every_construction_exports_and_passes_the_checks(tmp_path, name):
    algo = ALGORITHMS[name]
    problem = algo.draw(np.random.default_rng(0), OPTS)
    step = algo.choose_step(problem)
    temps = auto_temps("odd", 2 * OPTS.N + 2, algo.score_bounds(problem, step), torch.float64)
    con = algo.build(OPTS, step, temps, "odd")
    export_construction(con, tmp_path / name)
    back = load_construction(tmp_path / name)
    assert back.layout.to_json() == con.layout.to_json() and back.answer.register == con.answer.register


def test_trained_export_readout_tokens_lie_in_the_prompt(tmp_path):
    from algoformer.training.models import ModelSpec, build_model
    from constructions.export import decoder_meta, export_model
    torch.manual_seed(0)
    model = build_model(ModelSpec("algoformer", width=16, heads=2, attention="exact"), 3, 1, 10)
    export_model(model, tmp_path / "t", extra=decoder_meta(5))
    load_model(tmp_path / "t")
    meta = json.loads((tmp_path / "t.json").read_text())
    meta["readout"]["answer"]["tokens"][-1] = 10                  # the prompt has 2N = 10 tokens
    (tmp_path / "t.json").write_text(json.dumps(meta))
    _refused(tmp_path / "t", ".json", "readout 'answer': tokens", "[0, 10)")
