"""Extraction under torchrun (gloo, 2 CPU processes): same file as one process, resume after a
dead rank with another world size, and a failing rank ends the job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featkit.extraction import extract
from tests.featkit.test_cache import assert_same_file

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("dist_worker.py"))


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _torchrun(nproc: int, *args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           WORKER, *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _extract_args(model: str, cache: Path, split: str = "train") -> list[str]:
    return ["extract", "--model", model, "--dataset", "digits", "--splits", split, "--cache-dir", str(cache),
            "--shard-size", "64", "--batch-size", "16", "--num-workers", "0", "--no-progress"]


def test_two_ranks_write_the_single_process_file(tmp_path):
    single = subprocess.run([sys.executable, WORKER, *_extract_args("test:tiny-clip", tmp_path / "one", "val")],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    proc = _torchrun(2, *_extract_args("test:tiny-clip", tmp_path / "two", "val"), "--distributed", env=_env())
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.count("val ") == 1  # rank 0 alone reports
    [a] = (tmp_path / "one").rglob("val-*.h5")
    [b] = (tmp_path / "two").rglob("val-*.h5")
    assert a.name == b.name
    assert_same_file(a, b)


def test_dead_rank_then_resume_with_one_process(tmp_path):
    cache, pids = tmp_path / "cache", tmp_path / "pids"
    pids.mkdir()
    proc = _torchrun(2, *_extract_args("pixels:8", cache), env=_env(FEATKIT_TEST_SLOW="0.05", FEATKIT_TEST_PIDS=str(pids)))
    deadline = time.time() + 120
    while len(list(cache.rglob("shard-*.npz"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(int((pids / "rank1.pid").read_text()), 9)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not list(cache.rglob("train-*.h5"))
    done = len(list(cache.rglob("shard-*.npz")))
    assert 0 < done < 19
    resumed = subprocess.run([sys.executable, WORKER, *_extract_args("pixels:8", cache)], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "shards resumed" in resumed.stdout
    [final] = cache.rglob("train-*.h5")
    reference = extract("pixels:8", "digits", splits=["train"], cache_dir=tmp_path / "ref", shard_size=64,
                        batch_size=16, progress=False, num_workers=0)[0]
    assert_same_file(final, reference.path)


def test_failing_rank_ends_the_job_with_its_error(tmp_path):
    started = time.time()
    proc = _torchrun(2, *_extract_args("pixels:8", tmp_path), env=_env(FEATKIT_TEST_FAIL_RANK="1"))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode != 0
    assert "injected failure on rank 1" in err
    assert time.time() - started < 240


_TWO_CALLS = """
import os, sys
from featkit.extraction import extract
for split in ("val", "test"):
    summary = extract("pixels:8", "digits", splits=[split], cache_dir=sys.argv[1], shard_size=64,
                      progress=False, num_workers=0)[0]
    if os.environ["RANK"] == "0":  # ranks share stdout: their lines would interleave
        print(split, summary.path.name, flush=True)
"""


def test_two_extract_calls_in_one_job_share_the_process_group(tmp_path):
    script = tmp_path / "two_calls.py"
    script.write_text(_TWO_CALLS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script), str(tmp_path / "cache")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.split("\n") if line] == ["val", "test"]
    assert len(list((tmp_path / "cache").rglob("*.h5"))) == 2


def test_distributed_flag_outside_torchrun_is_an_error():
    from featkit.cli import main

    env_backup = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR") if k in os.environ}
    try:
        assert main(_extract_args("pixels:8", Path("/nonexistent")) + ["--distributed"]) == 2
    finally:
        os.environ.update(env_backup)


pytestmark = pytest.mark.filterwarnings("ignore")
