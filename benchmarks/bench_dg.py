"""DG benchmark: the seven algorithms x 10 seeds of ``featkit probe dg`` on CUB-sized features,
timed per algorithm and against ERM alone, measured in the same run.

Data: synthetic CUB-sized features (5,994 train + val x 1,024, 200 classes, 10 % of them val;
5,794 test), Gaussian classes in a random basis with a decaying spectrum, plus a binary
attribute that shifts the features along one direction and agrees with the class parity in 90 %
of train / val rows but is independent of the class in test (ERM: about 83 % test accuracy); groups = (class, attribute), 400
of them, domains = the attribute. Everything is the task's defaults (:mod:`probes.dg.defaults`):
full-batch Adam, 200 steps, burn-in 100 for IRM / V-REx / EQRM, three grid values per
algorithm, val worst-group choice, a linear head (CORAL and MMD then train once per seed: their
penalty has no gradient on frozen features). ``--adapter-dim 256`` times the adapter variant.

    PYTHONPATH=. python3 benchmarks/bench_dg.py            # full size (minutes on 2 cores)
    PYTHONPATH=. python3 benchmarks/bench_dg.py --quick    # smoke size
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from _measure import cpu_seconds

from featkit.results import format_table
from probes.dg.defaults import ALGORITHMS, DEFAULT_GRIDS, DG_SEEDS
from probes.dg.protocol import DGSplit, GroupNames, dg_probe
from probes.dg.train import TrainOptions


def make_split(rng: np.random.Generator, means: np.ndarray, noise: np.ndarray,
               shift: np.ndarray, n: int, agree: float) -> DGSplit:
    """``n`` rows: class means plus correlated noise, the attribute's shift, L2 not applied
    (the probe normalises)."""
    n_classes = len(means)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    parity = labels % 2
    attribute = np.where(rng.random(n) < agree, parity, 1 - parity)
    x = means[labels] + rng.standard_normal((n, means.shape[1])) @ noise
    x += np.outer(2 * attribute - 1, shift)
    groups = 2 * labels + attribute
    return DGSplit(x.astype(np.float32), labels.astype(np.int64), groups, attribute, groups)


def make_data(n_pool: int, n_test: int, dim: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    rank = 1.0 + np.arange(dim)
    means = 0.8 * rng.standard_normal((n_classes, dim)) @ ((basis * rank**-0.5) @ basis.T)
    noise = (basis * rank**-0.25) @ basis.T
    shift = 0.6 * basis[:, 0]
    n_val = n_pool // 10
    train = make_split(rng, means, noise, shift, n_pool - n_val, 0.9)
    val = make_split(rng, means, noise, shift, n_val, 0.9)
    test = make_split(rng, means, noise, shift, n_test, 0.5)
    group_names = tuple(f"class={c}|attr={a}" for c in range(n_classes) for a in (0, 1))
    names = GroupNames(tuple(map(str, range(n_classes))), group_names, ("attr=0", "attr=1"),
                       group_names)
    return train, val, test, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke size (seconds)")
    parser.add_argument("--seeds", type=int, default=DG_SEEDS)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default)")
    parser.add_argument("--adapter-dim", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (600, 580, 128, 20) if args.quick else (5994, 5794, 1024, 200)
    train, val, test, names = make_data(*size, seed=0)
    options = TrainOptions(adapter_dim=args.adapter_dim)
    print(f"{len(train)} train + {len(val)} val x {size[2]}, {len(test)} test, {size[3]} "
          f"classes, {len(names.groups)} groups; {args.seeds} seeds; torch threads "
          f"{torch.get_num_threads()}; device {args.device}; adapter {args.adapter_dim}",
          flush=True)
    dg_probe(train, val, test, names=names, algorithms=["erm"], seeds=1,  # warm-up
             options=TrainOptions(steps=5, adapter_dim=args.adapter_dim), device=args.device,
             progress=False)
    rows, seconds, cpu_of, erm_runs = [], {}, {}, []
    # ERM runs first and again last; its time is the faster of the two (the machine is shared)
    for algorithm in (*ALGORITHMS, "erm"):
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = dg_probe(train, val, test, names=names, algorithms=[algorithm],
                          seeds=args.seeds, options=options, device=args.device,
                          progress=False)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        print(f"  {algorithm}: {wall:.1f} s", flush=True)
        if algorithm == "erm":
            erm_runs.append((wall, cpu))
            seconds["erm"], cpu_of["erm"] = min(erm_runs)
            if len(erm_runs) > 1:
                rows[0]["seconds"] = f"{seconds['erm']:.1f}"
                rows[0]["cpu s"] = f"{cpu_of['erm']:.1f}"
                continue
        else:
            seconds[algorithm], cpu_of[algorithm] = wall, cpu
        summary = result.algorithms[algorithm]
        trained = len(summary.grid) or 1
        rows.append({
            "algorithm": algorithm, "networks / seed": trained,
            "grid": ",".join(f"{v:g}" for v in DEFAULT_GRIDS.get(algorithm, ())) or "-",
            "seconds": f"{wall:.1f}", "cpu s": f"{cpu:.1f}",
            "average": summary.average["mean"], "worst group": summary.worst_group["mean"],
        })
    total, total_cpu = sum(seconds.values()), sum(cpu_of.values())
    rows.append({"algorithm": "all seven", "seconds": f"{total:.1f}",
                 "cpu s": f"{total_cpu:.1f}"})
    for row, wall, cpu in zip(rows, [*seconds.values(), total], [*cpu_of.values(), total_cpu]):
        row["x ERM"] = f"{wall / seconds['erm']:.2f}"
        row["x ERM (cpu)"] = f"{cpu / cpu_of['erm']:.2f}"
    print(format_table(rows, ["algorithm", "networks / seed", "grid", "seconds", "cpu s",
                              "x ERM", "x ERM (cpu)", "average", "worst group"]))
    per_step = seconds["erm"] / (args.seeds * options.steps)
    print(f"ERM alone (faster of {', '.join(f'{t:.1f}' for t, _ in erm_runs)} s): "
          f"{seconds['erm']:.1f} s for {args.seeds} seeds x {options.steps} "
          f"full-batch steps ({1000 * per_step:.1f} ms per step, evaluation included); all "
          f"seven: {total:.1f} s = {total / seconds['erm']:.2f}x ERM "
          f"({total_cpu / cpu_of['erm']:.2f}x in CPU seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
