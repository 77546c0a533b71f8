"""Feature-space PGD: the batched attack vs a per-sample loop of the same attack, same run.

CUB-sized synthetic test features: 5,794 × 1,024 float32, 200 classes (class centre + Gaussian
noise), attacked through a ``probes.linear.LinearProbe`` with L2 normalisation inside its
``logits`` (the default probe; weights = the normalised class centres), L-inf PGD, 20 steps,
eps = 0.05 × mean ||x||_inf, no random start, on the CPU.

- batched: ``probes.perturb.pgd`` on the whole set (one call; on the CPU it works through
  cache-sized blocks of rows); timed before and after the loop, the ratio uses their mean.
- loop: the same ``pgd`` call on one row at a time, for every row (``--loop-n`` times a subset
  and extrapolates, marked as such).
- floors: the two GEMMs every step needs whatever the implementation (logits ``X @ W.T`` and
  the input gradient ``G @ W``), 20 times, with torch's ``mm`` (MKL) and with the GEMM the probe
  uses (``probes._matmul``: oneDNN, which runs AVX-512 on AMD CPUs where MKL does not).

Both must give the same perturbation (max |difference| printed). Each thread setting in
``--threads`` is measured separately; the headline is torch's default (all cores: the batched
GEMMs use them, a loop over single rows cannot). On a loaded machine torch's threads spin-wait,
so the load average is printed and ``--threads 1`` gives the single-core figure. Wall and CPU
seconds are both reported. Run: ``python benchmarks/bench_perturb.py`` or ``--quick``
(1,000 × 256, 50 classes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
from _measure import cpu_seconds


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


def measure(probe, x, y, eps: float, steps: int, loop_n: int) -> dict:
    """Floors, batched attack (before and after the loop) and per-sample loop at the current
    torch thread count."""
    from probes import _matmul
    from probes.perturb import pgd

    n = len(x)

    def batched():
        return pgd(probe, x, y, eps=eps, steps=steps, norm="linf")

    def loop():
        return torch.cat([pgd(probe, x[i : i + 1], y[i : i + 1], eps=eps, steps=steps,
                              norm="linf") for i in range(loop_n)])

    weight = torch.from_numpy(probe.weight)
    weight_t = weight.T.contiguous()
    packed, packed_t = _matmul.pack(weight), _matmul.pack(weight_t)
    upstream = torch.randn(n, weight.shape[0])

    def floor_mm():
        for _ in range(steps):
            x @ weight.T
            upstream @ weight

    def floor_fast():
        for _ in range(steps):
            _matmul.linear(x, weight, packed)
            _matmul.linear(upstream, weight_t, packed_t)

    batched()  # warm-up (allocator, kernels, packed weights)
    floor_mm()
    floor_fast()
    rows = {}
    rows["floor_mm"] = timed(floor_mm)[1:]
    rows["floor_fast"] = timed(floor_fast)[1:]
    delta, *rows["batched_before"] = timed(batched)
    looped, *rows["loop"] = timed(loop)
    _, *rows["batched_after"] = timed(batched)
    return {"rows": rows, "agreement": float(torch.max(torch.abs(delta[:loop_n] - looped)))}


def report(result: dict, n: int, loop_n: int, steps: int) -> float:
    """Print one thread setting's table; returns the wall-clock speed-up."""
    rows = result["rows"]
    print(f"{'measurement':<50}{'wall s':>10}{'CPU s':>10}{'s / step':>12}")
    names = {
        "floor_mm": f"floor: 2 GEMMs/step, torch mm (MKL), {n:,} rows",
        "floor_fast": f"floor: 2 GEMMs/step, probes._matmul, {n:,} rows",
        "batched_before": f"batched, {n:,} rows (before)",
        "loop": f"per-sample loop, {loop_n:,} rows",
        "batched_after": f"batched, {n:,} rows (after)",
    }
    for key, name in names.items():
        wall, cpu = rows[key]
        print(f"{name:<50}{wall:>10.3f}{cpu:>10.3f}{wall / steps:>12.4f}")
    scale = n / loop_n
    wall_loop, cpu_loop = rows["loop"][0] * scale, rows["loop"][1] * scale
    if loop_n < n:
        print(f"{'per-sample loop, extrapolated to ' + format(n, ','):<50}"
              f"{wall_loop:>10.1f}{cpu_loop:>10.1f}")
    wall_batched = (rows["batched_before"][0] + rows["batched_after"][0]) / 2
    cpu_batched = (rows["batched_before"][1] + rows["batched_after"][1]) / 2
    ratio = wall_loop / wall_batched
    print(f"batched: {wall_batched / steps:.4f} s per step for all {n:,} rows "
          f"({1e6 * wall_batched / steps / n:.2f} µs per row-step); "
          f"{wall_batched / rows['floor_fast'][0]:.2f}× its GEMM floor")
    print(f"loop: {1e3 * rows['loop'][0] / steps / loop_n:.3f} ms per row-step")
    print(f"speed-up of batched over the per-sample loop: {ratio:.1f}× wall, "
          f"{cpu_loop / cpu_batched:.1f}× CPU (target ≥ 20×)")
    print(f"max |delta_batched - delta_loop| = {result['agreement']:.2e} "
          "(same attack: must be ≤ 1e-6)")
    return ratio


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
    parser.add_argument("--threads", default="0,1",
                        help="comma-separated torch thread counts to measure; 0 = torch's "
                        "default (all cores), the headline (default: 0,1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = [int(t) for t in args.threads.split(",")]
    if len(settings) > 1:  # one fresh process per thread setting: no thread pool carried over
        for threads in settings:
            others = [a for a in sys.argv[1:] if not a.startswith("--threads")]
            if "--threads" in sys.argv:
                position = sys.argv.index("--threads")
                others = sys.argv[1:position] + sys.argv[position + 2 :]
            subprocess.run([sys.executable, __file__, *others, "--threads", str(threads)],
                           check=True)
        return

    from probes.perturb import eps_scale, eps_sweep

    default_threads = torch.get_num_threads()
    n = args.n or (1_000 if args.quick else 5_794)
    dim = args.dim or (256 if args.quick else 1_024)
    n_classes = args.classes or (50 if args.quick else 200)
    loop_n = min(n, args.loop_n or n)
    probe, features, labels = make_problem(n, dim, n_classes, args.spread, args.seed)
    eps = args.eps_rel * eps_scale(features, "linf")
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    print(f"data: {n:,} × {dim:,} float32, {n_classes} classes; L-inf PGD, {args.steps} steps, "
          f"eps = {args.eps_rel} × mean ||x||_inf = {eps:.4g}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    torch.set_num_threads(settings[0] or default_threads)
    label = f"{torch.get_num_threads()} thread(s)" + (" (torch's default)" if not settings[0] else "")
    print(f"== {label}", flush=True)
    ratio = report(measure(probe, x, y, eps, args.steps, loop_n), n, loop_n, args.steps)
    print(f"speed-up with {label}: {ratio:.1f}×")

    sweep = eps_sweep(probe, features, labels, [0.0, args.eps_rel], eps_rel=True,
                      steps=args.steps, progress=False, device="cpu")
    print(f"probe top-1: clean {100 * sweep.clean_top1:.2f} %, at eps {args.eps_rel} × mean "
          f"||x||_inf {100 * sweep.points[1].top1:.2f} % (attack success "
          f"{100 * sweep.points[1].success_rate:.2f} %)")


if __name__ == "__main__":
    main()
