"""The notebooks the usual way: ``jupyter nbconvert --execute`` from outside the repository, with no
ALGOFORMER_ROOT (the notebook finds the repository from its own folder), and every environment
variable the notebooks read documented in docs/notebooks.md."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _variables() -> set[str]:
    found = set()
    for nb in NOTEBOOKS:
        found |= set(re.findall(r"environ\.get\(\\?\"(ALGOFORMER_[A-Z_]+)", nb.read_text()))
    return found


def test_every_environment_variable_is_documented():
    names = _variables()
    assert {"ALGOFORMER_ROOT", "ALGOFORMER_RUNS_OUT"} <= names          # the parser finds what it should
    doc = (ROOT / "docs" / "notebooks.md").read_text()
    assert not [n for n in sorted(names) if f"`{n}`" not in doc]


def test_notebooks_extra_has_what_nbconvert_needs():
    text = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^notebooks = \[(.*)\]$", text, re.M)
    assert extra and all(p in extra.group(1) for p in ("nbconvert", "ipykernel", "jupyterlab"))


@pytest.mark.skipif(importlib.util.find_spec("nbconvert") is None or shutil.which("jupyter") is None,
                    reason="nbconvert is not installed (pip install -e .[notebooks])")
def test_nbconvert_execute_runs_notebook_a(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALGOFORMER_ROOT"}
    env.update(ALGOFORMER_FAST="1", ALGOFORMER_FIGURES=str(tmp_path / "figures"), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    nb = ROOT / "notebooks" / "a_error_vs_temperature.ipynb"
    r = subprocess.run(["jupyter", "nbconvert", "--execute", "--to", "notebook", "--output-dir", str(tmp_path),
                        str(nb)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((tmp_path / nb.name).read_text())
    code = [c for c in done["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["a_temperature_gd.png",
                                                                            "a_temperature_newton.png"]
