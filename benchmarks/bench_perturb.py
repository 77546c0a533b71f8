"""Feature-space PGD: the batched attack vs a per-sample loop of the same attack, same run.

CUB-sized synthetic test features: 5,794 × 1,024 float32, 200 classes (class centre + Gaussian
noise), attacked through a ``probes.linear.LinearProbe`` with L2 normalisation inside its
``logits`` (the default probe; weights = the normalised class centres), L-inf PGD, 20 steps,
eps = 0.05 × mean ||x||_inf, no random start, on the CPU.

- batched: ``probes.perturb.pgd`` on the whole set at once (one forward/backward per step);
  timed before and after the loop, the ratio uses their mean.
- loop: the same ``pgd`` call on one row at a time, for every row (``--loop-n`` times a subset
  and extrapolates, marked as such).
- floor: the two GEMMs every step needs whatever the implementation (logits ``X @ W.T`` and the
  input gradient ``G @ W``), 20 times: how close the batched attack is to the arithmetic.

The two must give the same perturbation (max |difference| printed). The machine may be shared:
wall and CPU seconds are both reported. Both run with one torch thread by default (``--threads``):
on a loaded 2-core machine torch's 2 intra-op threads spin-wait and the batched attack ran ~50x
slower than on one thread. Run: ``PYTHONPATH=. python3 benchmarks/bench_perturb.py``
or ``--quick`` (1,000 × 256, 50 classes).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_problem(n: int, dim: int, n_classes: int, spread: float, seed: int):
    from probes.linear import LinearProbe

    rng = np.random.default_rng(seed)
    centres = spread * rng.standard_normal((n_classes, dim))
    labels = rng.integers(0, n_classes, n)
    features = (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32)
    weight = centres / np.linalg.norm(centres, axis=1, keepdims=True) * 20.0
    probe = LinearProbe(weight=weight.astype(np.float32), bias=np.zeros(n_classes, np.float32),
                        class_names=tuple(map(str, range(n_classes))), normalization="l2")
    return probe, features, labels


def timed(fn):
    cpu, wall = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 × 256 smoke run")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--classes", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps-rel", type=float, default=0.05)
    parser.add_argument("--spread", type=float, default=0.15,
                        help="class-centre scale vs unit noise")
    parser.add_argument("--loop-n", type=int, default=None,
                        help="rows in the per-sample loop (default: all; fewer are extrapolated)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both (default: 1; 0 = torch's choice, "
                        "which on a busy 2-core machine spin-waits and runs ~50x slower)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from probes.perturb import eps_scale, eps_sweep, pgd

    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.n or (1_000 if args.quick else 5_794)
    dim = args.dim or (256 if args.quick else 1_024)
    n_classes = args.classes or (50 if args.quick else 200)
    loop_n = min(n, args.loop_n or n)
    probe, features, labels = make_problem(n, dim, n_classes, args.spread, args.seed)
    eps = args.eps_rel * eps_scale(features, "linf")
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    print(f"data: {n:,} × {dim:,} float32, {n_classes} classes; L-inf PGD, {args.steps} steps, "
          f"eps = {args.eps_rel} × mean ||x||_inf = {eps:.4g}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)

    def batched():
        return pgd(probe, x, y, eps=eps, steps=args.steps, norm="linf")

    def loop():
        return torch.cat([pgd(probe, x[i : i + 1], y[i : i + 1], eps=eps, steps=args.steps,
                              norm="linf") for i in range(loop_n)])

    weight = torch.from_numpy(probe.weight)
    upstream = torch.randn(n, n_classes)

    def floor():
        for _ in range(args.steps):
            x @ weight.T
            upstream @ weight

    batched()  # warm-up (allocator, kernels)
    floor()
    _, wall_floor, cpu_floor = timed(floor)
    delta, wall_before, cpu_before = timed(batched)
    looped, wall_loop, cpu_loop = timed(loop)
    _, wall_after, cpu_after = timed(batched)
    scale = n / loop_n
    wall_batched = (wall_before + wall_after) / 2
    cpu_batched = (cpu_before + cpu_after) / 2
    agreement = float(torch.max(torch.abs(delta[:loop_n] - looped)))

    print()
    print(f"{'measurement':<46}{'wall s':>10}{'CPU s':>10}{'s / step':>12}")
    rows = [
        (f"floor: 2 GEMMs per step, {n:,} rows", wall_floor, cpu_floor),
        (f"batched, {n:,} rows (before)", wall_before, cpu_before),
        (f"per-sample loop, {loop_n:,} rows", wall_loop, cpu_loop),
        (f"batched, {n:,} rows (after)", wall_after, cpu_after),
    ]
    for name, wall, cpu in rows:
        print(f"{name:<46}{wall:>10.3f}{cpu:>10.3f}{wall / args.steps:>12.4f}")
    if loop_n < n:
        print(f"{'per-sample loop, extrapolated to ' + format(n, ','):<46}"
              f"{wall_loop * scale:>10.1f}{cpu_loop * scale:>10.1f}")
    print()
    ratio = wall_loop * scale / wall_batched
    print(f"batched: {wall_batched / args.steps:.4f} s per step for all {n:,} rows "
          f"({1e6 * wall_batched / args.steps / n:.2f} µs per row-step)")
    print(f"batched / GEMM floor: {wall_batched / wall_floor:.2f}× wall, "
          f"{cpu_batched / cpu_floor:.2f}× CPU")
    print(f"loop: {1e3 * wall_loop / args.steps / loop_n:.3f} ms per row-step")
    print(f"speed-up of batched over the per-sample loop: {ratio:.1f}× wall, "
          f"{cpu_loop * scale / cpu_batched:.1f}× CPU (target ≥ 20×)")
    print(f"max |delta_batched - delta_loop| = {agreement:.2e} (same attack: must be ≤ 1e-6)")

    sweep = eps_sweep(probe, features, labels, [0.0, args.eps_rel], eps_rel=True,
                      steps=args.steps, progress=False, device="cpu")
    print(f"probe top-1: clean {100 * sweep.clean_top1:.2f} %, at eps {args.eps_rel} × mean "
          f"||x||_inf {100 * sweep.points[1].top1:.2f} % (attack success "
          f"{100 * sweep.points[1].success_rate:.2f} %)")


if __name__ == "__main__":
    main()
