"""Zero-shot scoring of cached features vs the bare image x class GEMM, 10,000 x 1,000.

Synthetic data: D = 768 float32 image features (3.2 x the true class's embedding plus unit
Gaussian noise: top-1 near 50 %, so the rank's second comparison pass is needed) and 1,000
unit class embeddings, as the cache holds them.

- floor: the bare ``features @ classes.T`` GEMM of all images at once (torch ``mm``); the
  packed oneDNN GEMM (``probes._matmul``, weight packed beforehand) is timed too, for reference;
- ours: ``probes.zeroshot.zeroshot_classify(features, labels, classes)``: input checks, the
  GEMM, the true class's rank per image (ties to the lower index, two comparison passes), top-1,
  top-5, mean per-class and per-class accuracy.

The machine is shared and noisy: the paths run alternately, ``--rounds`` times; the ratio is
the median of the per-round ratios, in wall time and in CPU time (user + system of this
process, less sensitive to other processes' load).

    PYTHONPATH=. python3 benchmarks/bench_zeroshot.py [--rounds 15] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def make_data(n: int, dim: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    classes = rng.standard_normal((n_classes, dim), dtype=np.float32)
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, n)
    features = 3.2 * classes[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    return np.ascontiguousarray(features, dtype=np.float32), labels, classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from probes._matmul import linear, pack
    from probes.classification import score_classification
    from probes.zeroshot import zeroshot_classify

    if args.threads:
        torch.set_num_threads(args.threads)
    features, labels, classes = make_data(args.n, args.dim, args.classes)
    x, w = torch.from_numpy(features), torch.from_numpy(classes)
    packed = pack(w)

    from _measure import cpu_seconds

    paths = {
        "floor": lambda: x @ w.T,
        "onednn": lambda: linear(x, w, packed),
        "ours": lambda: zeroshot_classify(features, labels, classes),
    }
    result = zeroshot_classify(features, labels, classes)
    reference = score_classification((x @ w.T).numpy(), labels)
    same = (result.top1, result.top5, result.mean_per_class) == (
        reference.top1, reference.top5, reference.mean_per_class)
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for run in paths.values():
        run()  # warm up
    for _ in range(args.rounds):
        for name, run in paths.items():
            cpu0, start = cpu_seconds(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - cpu0)

    def ratio(times: dict[str, list[float]], over: str) -> float:
        return statistics.median(m / f for m, f in zip(times["ours"], times[over]))

    print(f"{args.n} images x {args.classes} classes, dim {args.dim}, torch threads "
          f"{torch.get_num_threads()}, {args.rounds} rounds; top-1 {100 * result.top1:.2f} %, "
          f"top-5 {100 * result.top5:.2f} %, metrics equal to scoring the full matrix: {same}")
    for name, label in (("floor", "bare GEMM (mm)"), ("onednn", "packed oneDNN GEMM"),
                        ("ours", "zero-shot")):
        print(f"{label:>20}: wall best {min(wall[name]) * 1e3:6.1f} ms, median "
              f"{statistics.median(wall[name]) * 1e3:6.1f} ms; CPU median "
              f"{statistics.median(cpu[name]) * 1e3:6.1f} ms")
    print(f"zero-shot / bare GEMM: {ratio(wall, 'floor'):.2f}x wall, {ratio(cpu, 'floor'):.2f}x "
          f"CPU (median of rounds; target <= 1.2x); / packed oneDNN GEMM: "
          f"{ratio(wall, 'onednn'):.2f}x wall, {ratio(cpu, 'onednn'):.2f}x CPU")


if __name__ == "__main__":
    main()
