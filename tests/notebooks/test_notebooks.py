"""The analysis notebooks run clean from a fresh kernel on the tiny offline setup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "aligned_vs_original.ipynb"


def test_notebook_is_committed_clean_with_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    for name in ("MODEL", "DATASETS", "CACHE_DIR"):
        assert f"{name} = " in first.source
    assert 'MODEL = "test:tiny-clip"' in first.source and '"digits"' in first.source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_from_a_fresh_kernel(digits_cache, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Inject parameters after the parameters cell (as papermill does): the session's tiny
    # cache, and a short C grid so the run stays well under a minute on a loaded 2-core box.
    overrides = (
        f"CACHE_DIR = {json.dumps(str(digits_cache))}\n"
        "C_GRID = [0.1, 10.0, 1000.0]\n"
        "EPS_REL = [0, 0.002, 0.01, 0.05]\n"
    )
    nb.cells.insert(1, nbformat.v4.new_code_cell(overrides))
    # The kernel imports featkit from this checkout; one torch thread avoids oversubscribing
    # the CPU (tiny L-BFGS problems are many times slower with contended threads).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # bars + PGD curves + PCA + per-class, one dataset
    assert len(images) >= 4
    markdown = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    assert "linear top-1" in markdown and "`aligned` vs `visual`" in markdown
    assert "random weights" in markdown  # the tiny model is flagged as untrained
    tables = "".join(o["data"].get("text/html", "") for o in outputs if "data" in o)
    assert "linear_top1" in tables and "retrieval_mAP" in tables


def test_notebook_defaults_to_the_project_cache(monkeypatch):
    """Run from notebooks/ (as Jupyter does), the default cache is the project's cache/, not an
    untracked notebooks/cache/."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.chdir(NOTEBOOK.parent)
    monkeypatch.delenv("FEATKIT_CACHE", raising=False)
    namespace: dict = {}
    exec(nb.cells[0].source + "\n" + nb.cells[1].source, namespace)
    assert namespace["CACHE_DIR"] == str(REPO / "cache")
    monkeypatch.setenv("FEATKIT_CACHE", "/elsewhere")
    namespace = {}
    exec(nb.cells[0].source + "\n" + nb.cells[1].source, namespace)
    assert namespace["CACHE_DIR"] is None  # featkit then reads $FEATKIT_CACHE itself
