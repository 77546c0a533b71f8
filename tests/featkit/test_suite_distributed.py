"""``featkit run`` under torchrun (gloo, 2 CPU processes): the extraction cells are distributed as
``featkit extract`` distributes them (the same cache file as one process), rank 0 alone runs the
task cells, writes the ``.cell`` files and reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.featkit.test_cache import assert_same_file

REPO = Path(__file__).resolve().parents[2]
SUITE = """
name = "d"
out = "{out}"
cache_dir = "{cache}"

[extract]
num_workers = 0
shard_size = 128
splits = ["val", "test"]

[[models]]
id = "pixels:8"

[[datasets]]
name = "digits"

[[tasks]]
task = "retrieval"
"""


@pytest.mark.slow  # two torchrun processes and a single-process run: ~25 s on 2 cores
def test_two_ranks_share_the_extraction_and_rank_zero_runs_the_tasks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    files = {}
    for name, launcher in (("one", [sys.executable, "-m", "featkit"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run",
                                    "--nproc_per_node=2", "--standalone", "-m", "featkit"])):
        suite = tmp_path / f"{name}.toml"
        suite.write_text(SUITE.format(out=tmp_path / name / "out", cache=tmp_path / name / "c"))
        proc = subprocess.run([*launcher, "run", str(suite), "--no-progress", "--no-report"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("suite d: 2 cells, 0 done, 2 to run") == 1  # rank 0 alone
        assert (tmp_path / name / "out" / "pixels__8" / "digits" / "retrieval-visual.json"
                ).exists()
        [files[name]] = (tmp_path / name / "c").rglob("test-*.h5")
    assert files["one"].name == files["two"].name
    assert_same_file(files["one"], files["two"])
