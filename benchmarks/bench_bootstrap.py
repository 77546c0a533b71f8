"""1,000 bootstrap resamples of a metric vs computing the metric once (issue 18).

Intervals resample per-item scores (0/1 correctness, per-query AP); the metric is never
recomputed from features. Two cases, each measured in this process and alternated over
``--rounds`` rounds (medians reported, the machine may be shared):

- mAP on 5,794 queries (CUB's test split), 1,024-d features, 200 classes: the metric once is
  ``probes.retrieval.retrieval_map`` (exact leave-one-out full-ranking mAP, what ``featkit
  retrieval`` computes); the bootstrap is ``probes.bootstrap.bootstrap_mean`` of its per-query
  AP, 1,000 resamples (what ``--ci`` runs).
- top-1 on 50,000 items (ImageNet val), 1,024-d features, 1,000 classes: the metric once is the
  linear probe's logits (``LinearProbe.predict_scores``, the GEMM) and their top-1; the bootstrap
  is ``bootstrap_mean`` of the 0/1 correctness, 1,000 resamples.

For scale, the naive alternative (recompute the metric from features for every resample) would
cost ``resamples x`` the metric; that is printed, not run.

Run: ``python benchmarks/bench_bootstrap.py`` (``--quick``: a tenth of the items, 2 rounds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clustered(n: int, dim: int, n_classes: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = (spread * rng.standard_normal((n_classes, dim))).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    features = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    return features, labels, centres


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def map_case(n: int, resamples: int, rounds: int) -> dict:
    from probes.bootstrap import bootstrap_mean
    from probes.retrieval import retrieval_map

    x, y, _ = clustered(n, 1024, 200, 0.3, 0)
    metric, boot = [], []
    for _ in range(rounds):
        seconds, result = timed(lambda: retrieval_map(x, y, progress=False))
        metric.append(seconds)
        ap = result.per_query_ap[~np.isnan(result.per_query_ap)]
        seconds, interval = timed(lambda ap=ap: bootstrap_mean(ap, resamples=resamples, seed=0))
        boot.append(seconds)
    return {"metric": median(metric), "bootstrap": median(boot), "value": result.map,
            "interval": (interval.low, interval.high), "n": int(ap.size)}


def top1_case(n: int, resamples: int, rounds: int) -> dict:
    from probes.bootstrap import bootstrap_mean
    from probes.linear import LinearProbe

    x, y, centres = clustered(n, 1024, 1000, 0.12, 1)
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    probe = LinearProbe(weight=(centres / norms).astype(np.float32),
                        bias=np.zeros(len(centres), np.float32),
                        class_names=tuple(map(str, range(len(centres)))), normalization="l2")
    probe.predict_scores(x[:1024])  # pack the weights once, as a task run has
    metric, boot = [], []
    for _ in range(rounds):
        seconds, correct = timed(lambda: probe.predict_scores(x).argmax(axis=1) == y)
        metric.append(seconds)
        seconds, interval = timed(
            lambda c=correct: bootstrap_mean(c, resamples=resamples, seed=0))
        boot.append(seconds)
    return {"metric": median(metric), "bootstrap": median(boot), "value": float(correct.mean()),
            "interval": (interval.low, interval.high), "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, 2 rounds")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    scale = 10 if args.quick else 1
    import torch

    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {args.resamples} "
          f"resamples; medians of {rounds} alternating rounds", flush=True)
    cases = [
        (f"mAP, {5794 // scale:,} queries (retrieval_map once)", map_case(5794 // scale,
                                                                          args.resamples, rounds)),
        (f"top-1, {50000 // scale:,} items (probe logits + argmax once)",
         top1_case(50000 // scale, args.resamples, rounds)),
    ]
    print(f"\n{'case':<52}{'metric s':>10}{'bootstrap s':>13}{'ratio':>8}{'naive s':>10}")
    for name, r in cases:
        ratio = r["bootstrap"] / r["metric"]
        print(f"{name:<52}{r['metric']:>10.3f}{r['bootstrap']:>13.3f}{ratio:>7.2f}×"
              f"{args.resamples * r['metric']:>10.0f}")
    print()
    for name, r in cases:
        low, high = r["interval"]
        print(f"{name}: {100 * r['value']:.2f} [{100 * low:.2f}, {100 * high:.2f}] over "
              f"{r['n']:,} items")
    print("\nratio: bootstrap time / metric-once time (target ≤ 1.1×); naive: resamples × the "
          "metric, the cost of recomputing it per resample")


if __name__ == "__main__":
    main()
