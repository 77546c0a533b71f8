"""``featkit shift`` with a cached linear probe: scoring five shifted sets vs scoring ImageNet val.

Synthetic features at the real sizes (1,024-d, a 1,000-class l2-normalised linear probe as
``featkit probe linear`` saves it):

- one scoring of ImageNet val: 50,000 items, logits over the 1,000 classes and top-1;
- the five scorings, each through ``featkit.tasks.shift.score_set`` (what ``shift.run`` does per
  set once the features are loaded): ImageNetV2 (10,000 items, 1,000 classes), ImageNet-R
  (30,000, its 200 classes), ImageNet-Sketch (50,889, 1,000), ObjectNet (18,574 items, 113
  classes standing for ``--objectnet-columns`` ImageNet classes; 313 by default, more columns
  than the release maps, so an upper bound) and ImageNet-A (7,500, its 200 classes). Each
  scores only the columns its set covers and takes its reference accuracy from the val scores
  computed once, which the run computes in the "one scoring" step.

Ratios: the five together / one val scoring (target ≤ 2×), and the whole run's scoring (val once
+ the five) / one val scoring. Medians of ``--rounds`` alternating rounds (the machine may be
shared). Run: ``python benchmarks/bench_shift.py`` (``--quick``: a tenth of the items).
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

SETS = (("imagenetv2", 10_000, "all"), ("imagenet-r", 30_000, "r"),
        ("imagenet-sketch", 50_889, "all"), ("objectnet", 18_574, "objectnet"),
        ("imagenet-a", 7_500, "a"))


def subsets(objectnet_columns: int, seed: int):
    """The ClassSubset and the class count of each set."""
    from featkit.datasets.imagenet import DATA, imagenet_wnids
    from probes.shift import ClassSubset

    wnids = list(imagenet_wnids())
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(1000, objectnet_columns, replace=False))
    cut = np.sort(rng.choice(np.arange(1, objectnet_columns), 112, replace=False))
    groups = np.split(chosen, cut)  # 113 disjoint groups over the chosen classes
    out = {"all": ClassSubset.from_names(wnids, wnids),
           "objectnet": ClassSubset(tuple(tuple(int(c) for c in g) for g in groups), 1000)}
    for key, file in (("r", "imagenet_r_wnids.txt"), ("a", "imagenet_a_wnids.txt")):
        names = (DATA / file).read_text().split()
        out[key] = ClassSubset.from_names(names, wnids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--objectnet-columns", type=int, default=313)
    args = parser.parse_args()
    import torch

    from featkit.tasks.shift import LinearScorer, score_set
    from probes.linear import LinearProbe

    scale = 10 if args.quick else 1
    rounds = args.rounds or (2 if args.quick else 3)
    rng = np.random.default_rng(0)
    centres = (0.12 * rng.standard_normal((1000, args.dim))).astype(np.float32)

    def features(n: int, labels: np.ndarray) -> np.ndarray:
        return centres[labels] + rng.standard_normal((n, args.dim), dtype=np.float32)

    probe = LinearProbe(weight=centres / np.linalg.norm(centres, axis=1, keepdims=True),
                        bias=np.zeros(1000, np.float32), class_names=tuple(map(str, range(1000))),
                        normalization="l2")
    scorer = LinearScorer(probe, np.arange(1000), {})
    n_val = 50_000 // scale
    val_y = np.arange(n_val) % 1000
    val_x = features(n_val, val_y)
    data = []
    by_key = subsets(args.objectnet_columns, 1)
    for name, n, key in SETS:
        subset, n = by_key[key], n // scale
        labels = np.arange(n) % len(subset.groups)
        reference = np.array([g[0] for g in subset.groups])[labels]  # draw from a wnid's centre
        data.append((name, subset, features(n, reference), labels))
    probe.predict_scores(val_x[:1024])  # weights packed once, as for a loaded probe
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {args.dim}-d; "
          f"medians of {rounds} alternating rounds", flush=True)

    one, five, per_set = [], [], {name: [] for name, *_ in data}
    all_columns = np.arange(1000)
    for _ in range(rounds):
        start = time.perf_counter()
        full = scorer.scores(val_x, all_columns)
        top1 = float(np.mean(full.argmax(axis=1) == val_y))
        one.append(time.perf_counter() - start)
        total = 0.0
        for name, subset, x, y in data:
            start = time.perf_counter()
            shifted, ref, _ = score_set(scorer, subset, x, y, val_x, val_y, full)
            seconds = time.perf_counter() - start
            per_set[name].append(seconds)
            total += seconds
        five.append(total)

    print(f"\n{'scoring':<44}{'items':>9}{'columns':>9}{'seconds':>10}")
    print(f"{'ImageNet val, once (1,000 classes)':<44}{n_val:>9,}{1000:>9}{median(one):>10.3f}")
    for name, subset, x, _ in data:
        print(f"{name:<44}{len(x):>9,}{subset.columns.size:>9}{median(per_set[name]):>10.3f}")
    print(f"{'the five together':<44}{'':>18}{median(five):>10.3f}")
    ratio = median(five) / median(one)
    whole = (median(one) + median(five)) / median(one)
    print(f"\nfive scorings / one ImageNet val scoring: {ratio:.2f}× (target ≤ 2×)")
    print(f"whole run's scoring (val once + the five) / one val scoring: {whole:.2f}×")
    print(f"(val top-1 of the synthetic probe {100 * top1:.1f}%; last set's shifted top-1 "
          f"{100 * shifted.top1:.1f}%, reference {100 * ref.top1:.1f}%)")


if __name__ == "__main__":
    main()
