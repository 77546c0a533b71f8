"""Distributed extraction speed-up: 2 ranks x 1 thread vs 1 rank x 1 thread (issue 10).

Both runs extract the same generated image folder with the same tiny model into fresh caches,
in the same run. The time compared is the split's extraction time reported by featkit (decode,
model, shards, assembly), not process start-up; wall-clock times are printed too.

    python benchmarks/bench_distributed.py [--images 2000] [--model test:tiny-clip]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        sys.exit(out.stderr)
    split_seconds = float(re.search(r"^train\s+\d+\s+.*?\s(\d+\.\d)\s+new", out.stdout, re.M).group(1))
    return split_seconds, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="test:tiny-clip")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each; medians reported")
    parser.add_argument("--quick", action="store_true", help="400 images")
    args = parser.parse_args()
    n = 400 if args.quick else args.images
    from featkit.testing.datasets import make_imagefolder

    with tempfile.TemporaryDirectory() as tmp:
        per_class = n // 10
        make_imagefolder(Path(tmp) / "data", n_classes=10, train_per_class=per_class, test_per_class=1, image_size=64)
        common = ["extract", "--model", args.model, "--dataset", "imagefolder", "--data-root", f"{tmp}/data",
                  "--splits", "train", "--shard-size", "64", "--batch-size", "32", "--num-workers", "0", "--no-progress"]
        ones, twos = [], []
        for r in range(args.repeats):
            ones.append(run([sys.executable, "-m", "featkit", *common, "--cache-dir", f"{tmp}/c1-{r}"]))
            twos.append(run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "featkit", *common, "--cache-dir", f"{tmp}/c2-{r}"]))
        one = tuple(statistics.median(x) for x in zip(*ones))
        two = tuple(statistics.median(x) for x in zip(*twos))
    print(f"{args.model}, {n} images, shard 64, batch 32, 1 thread per rank, median of {args.repeats} runs each")
    print(f"{'run':<22}{'extract s':>10}{'wall s':>10}")
    print(f"{'1 rank x 1 thread':<22}{one[0]:>10.1f}{one[1]:>10.1f}")
    print(f"{'2 ranks x 1 thread':<22}{two[0]:>10.1f}{two[1]:>10.1f}")
    print(f"speed-up (extract time): {one[0] / two[0]:.2f}x  (ideal 2x)   wall-clock: {one[1] / two[1]:.2f}x")


if __name__ == "__main__":
    main()
