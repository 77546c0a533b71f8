"""featkit.load throughput from a warm page cache (issue 2 target: >= 1 GB/s).

Writes a 100,000 x 1,024 float32 cache file (400 MB), reads it once to warm the page cache, then
times `featkit.load_file` against `numpy.load` of the same array saved as .npy (the floor: a
plain memcpy-speed read) in the same run.

    python benchmarks/bench_load.py [--rows 100000] [--dim 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from featkit.cache import write_final
from featkit.featureset import load_file


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 rows")
    args = parser.parse_args()
    rows = 10_000 if args.quick else args.rows
    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, args.dim), dtype=np.float32)
    labels = rng.integers(0, 200, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        write_final(path, features={"visual": features}, labels=labels,
                    sample_ids=[f"img_{i:06d}" for i in range(rows)],
                    class_names=[str(i) for i in range(200)], attrs={"model": "bench"})
        npy = Path(tmp) / "bench.npy"
        np.save(npy, features)
        load_file(path, "visual")
        np.load(npy)
        t_featkit = best_of(lambda: load_file(path, "visual"), args.repeats)
        t_numpy = best_of(lambda: np.load(npy), args.repeats)
        assert np.array_equal(load_file(path, "visual").features, features)
    gb = features.nbytes / 1e9
    print(f"feature set: {rows} x {args.dim} float32 = {gb * 1000:.0f} MB (+ labels, {rows} sample ids)")
    print(f"{'reader':<28}{'seconds':>10}{'GB/s':>10}")
    print(f"{'featkit.load_file':<28}{t_featkit:>10.3f}{gb / t_featkit:>10.2f}")
    print(f"{'numpy.load (.npy, floor)':<28}{t_numpy:>10.3f}{gb / t_numpy:>10.2f}")
    print(f"featkit / numpy throughput ratio: {t_numpy / t_featkit:.2f}  (target: >= 1 GB/s absolute)")


if __name__ == "__main__":
    main()
