"""Leave-one-out full-ranking retrieval mAP vs the bare similarity GEMM, and vs
pytorch-metric-learning.

Synthetic data: N × D float32 features, C classes (class centre + Gaussian noise), written once
to a temporary .npy file. Each measurement runs in its own subprocess that loads that file, so
its peak memory is honest: the increase of the process's RSS high-water mark
(``resource.getrusage(...).ru_maxrss``) over its RSS just before the measured call.

- floor: ``Xn @ Xn.T`` for the L2-normalised features, the N × N similarity GEMM, in float32
  through numpy's BLAS (the one ``probes.retrieval`` uses on CPU) in row blocks of the same size
  that ``retrieval_map`` picks, written into one reused buffer. Measured before and after ours;
  the ratio is against their mean.
- ours: ``probes.retrieval.retrieval_map(X, labels)`` (cosine, leave-one-out, default 2 GB
  budget), normalisation included.
- pml: ``AccuracyCalculator(k=None)`` with a FAISS ``IndexFlatIP`` kNN on the normalised
  features. It materialises N × N neighbour indices and labels, so it runs on the first
  ``--pml-n`` rows only, and ours is timed on the same subset for the speed ratio and agreement.

The machine may be shared: wall times of the two floor runs show the noise; CPU time (user +
system of the worker process) is reported beside them.

Run: ``PYTHONPATH=. python3 benchmarks/bench_retrieval.py`` (50,000 × 1,024, 200 classes) or
``--quick`` (5,000 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _measure import cpu_seconds

REPO = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def make_data(path: Path, n: int, dim: int, n_classes: int, spread: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = (spread * rng.standard_normal((n_classes, dim))).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    features = np.lib.format.open_memmap(path / "features.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        features[start:stop] = centres[labels[start:stop]] + rng.standard_normal((stop - start, dim), dtype=np.float32)
    features.flush()
    del features
    np.save(path / "labels.npy", labels)


# ---------------------------------------------------------------- workers (one per subprocess)


def worker(kind: str, data: Path, n: int, chunk_rows: int) -> dict:
    features = np.load(data / "features.npy")[:n]
    features = np.ascontiguousarray(features)
    labels = np.load(data / "labels.npy")[:n]
    import faiss  # noqa: F401  (loaded before the baseline RSS, as in every other worker)

    from probes.retrieval import retrieval_map

    out: dict = {}
    if kind == "pml":
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import FaissKNN

        calculator = AccuracyCalculator(
            include=("mean_average_precision", "mean_average_precision_at_r", "r_precision", "precision_at_1"),
            k=None,
            device=torch.device("cpu"),
            knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP),
        )
    before = rss_bytes()
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    if kind == "floor":
        xn = features.copy()
        faiss.normalize_L2(xn)
        block = np.empty((chunk_rows, n), dtype=np.float32)
        for s in range(0, n, chunk_rows):
            rows = xn[s : s + chunk_rows]
            np.matmul(rows, xn.T, out=block[: len(rows)])
    elif kind == "ours":
        result = retrieval_map(features, labels, progress=False)
        out["metrics"] = result.metrics()
        out["chunk_rows"] = result.chunk_rows
        out["n_excluded"] = result.n_excluded
    elif kind == "pml":
        xn = features.copy()
        faiss.normalize_L2(xn)
        acc = calculator.get_accuracy(xn, labels)
        out["metrics"] = {
            "mAP": acc["mean_average_precision"],
            "mAP@R": acc["mean_average_precision_at_r"],
            "R-precision": acc["r_precision"],
            "P@1": acc["precision_at_1"],
        }
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = cpu_seconds() - cpu_start
    out["peak_increase_bytes"] = peak_rss_bytes() - before
    return out


def run_worker(kind: str, data: Path, n: int, chunk_rows: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--n", str(n), "--chunk-rows", str(chunk_rows)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 rows smoke run")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--spread", type=float, default=0.3, help="class-centre scale vs unit noise (0.3: mAP ≈ 0.45)")
    parser.add_argument("--pml-n", type=int, default=None, help="rows for the pytorch-metric-learning comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), args.n, args.chunk_rows)))
        return

    n = args.n or (5_000 if args.quick else 50_000)
    pml_n = min(n, args.pml_n or (2_000 if args.quick else 10_000))
    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        data = Path(tmp)
        make_data(data, n, args.dim, args.classes, args.spread, args.seed)
        print(f"data: {n:,} × {args.dim:,} float32, {args.classes} classes, spread {args.spread}; "
              f"{os.cpu_count()} CPUs", flush=True)

        ours = run_worker("ours", data, n)
        floor_before = run_worker("floor", data, n, ours["chunk_rows"])
        ours = run_worker("ours", data, n)
        floor_after = run_worker("floor", data, n, ours["chunk_rows"])
        floor = (floor_before["seconds"] + floor_after["seconds"]) / 2
        pml = run_worker("pml", data, pml_n)
        ours_small = run_worker("ours", data, pml_n)

    gib = 2**30
    print()
    print(f"{'measurement':<44}{'seconds':>10}{'CPU s':>10}{'peak +RSS':>12}")
    rows = [
        (f"floor: {n:,}² GEMM (before)", floor_before),
        (f"ours: LOO full-ranking mAP, {n:,}", ours),
        (f"floor: {n:,}² GEMM (after)", floor_after),
        (f"pml AccuracyCalculator(k=None), {pml_n:,}", pml),
        (f"ours, {pml_n:,}", ours_small),
    ]
    for name, r in rows:
        print(f"{name:<44}{r['seconds']:>10.2f}{r['cpu_seconds']:>10.2f}{r['peak_increase_bytes'] / gib:>9.2f} GiB")
    print()
    print(f"chunk rows: {ours['chunk_rows']}; queries excluded: {ours['n_excluded']}")
    fastest = min(floor_before["seconds"], floor_after["seconds"])
    floor_cpu = (floor_before["cpu_seconds"] + floor_after["cpu_seconds"]) / 2
    print(f"ours / GEMM floor: {ours['seconds'] / floor:.2f}× wall vs the mean floor, "
          f"{ours['seconds'] / fastest:.2f}× vs the faster one, "
          f"{ours['cpu_seconds'] / floor_cpu:.2f}× in CPU time (target ≤ 3×)")
    print(f"ours peak memory increase: {ours['peak_increase_bytes'] / 1e9:.2f} GB (target ≤ 2 GB)")
    print(f"pml / ours on {pml_n:,} rows: {pml['seconds'] / ours_small['seconds']:.1f}× slower")
    print()
    print(f"{'metric':<14}{'ours ' + format(n, ','):>14}{'ours ' + format(pml_n, ','):>14}{'pml':>14}{'|diff|':>10}")
    for key, value in ours["metrics"].items():
        small = ours_small["metrics"][key]
        ref = pml["metrics"].get(key)
        ref_text = f"{ref:>14.6f}{abs(ref - small):>10.1e}" if ref is not None else f"{'—':>14}{'':>10}"
        print(f"{key:<14}{value:>14.6f}{small:>14.6f}{ref_text}")


if __name__ == "__main__":
    main()
