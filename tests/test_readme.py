"""The README's claims hold as written: its Python snippet runs in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_python_snippet_runs_in_a_fresh_folder(tmp_path):
    blocks = python_blocks()
    assert blocks and "featkit.report(" in blocks[0]
    env = {**os.environ, "FEATKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "results" / "api" / "report" / "report.md").is_file()
    assert (tmp_path / "results" / "api" / "linear_probe.json").is_file()
