"""Execute every notebook in notebooks/ (small sizes, ALGOFORMER_FAST=1) in a temporary directory.

A notebook fails the test when a cell raises (each notebook ends in assert cells), when it writes
no PNG figure, or when it is stored in git with outputs.
"""
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 240     # per cell; every notebook takes well under a minute on a 2-core machine


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    figures = tmp_path / "figures"
    monkeypatch.setenv("ALGOFORMER_ROOT", str(ROOT))
    monkeypatch.setenv("ALGOFORMER_FIGURES", str(figures))
    monkeypatch.setenv("ALGOFORMER_FAST", "1")
    monkeypatch.setenv("ALGOFORMER_RUNS_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    pngs = list(figures.rglob("*.png"))
    assert pngs, f"{path.name} wrote no figure"
    assert all(p.stat().st_size > 5_000 for p in pngs)
