"""Features of every layer in one pass: time against one kind, and memory against N.

A tiny ViT (timm ``vit_tiny_patch16_224``: 12 blocks, width 192, random weights written to a
file and loaded through ``--weights``) extracts synthetic JPEGs through ``featkit.extract``:

- time: ``--layers all`` (``cls`` plus ``cls@1..12`` and ``patch_mean@1..12``, 25 kinds) against
  ``cls`` alone, same process, same loaded model, same images, rounds alternating; the ratio of
  the median CPU seconds (the work, robust to other processes on a shared machine; one torch
  thread) and of the median wall-clock seconds. Target: <= 1.15x.
- memory: ``--layers all`` over N images in a fresh process per N (shard size fixed), peak RSS
  above the loaded model against N, next to the size of one shard of every kind and of the whole
  final file's features.

    PYTHONPATH=. python benchmarks/bench_layers.py [--quick] [--images 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _measure import cpu_seconds, reset_peak, status_bytes

MODEL_ID = "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
SHARD = 256


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs (320x240, smooth content plus noise) in imagefolder layout, all in ``test``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        folder = root / "test" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([np.sin(xx / (20 + 7 * c) + phase[c]) * np.cos(yy / (15 + 5 * c))
                         for c in range(3)], -1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "train" / "c0").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "c0" / "x.jpg")


def make_weights(path: Path) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _extract(extractor, data: Path, cache: Path, features, batch_size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one extraction into a fresh cache."""
    from featkit.extraction import extract

    started, cpu = time.perf_counter(), cpu_seconds()
    extract(MODEL_ID, "imagefolder", data_root=data, splits=("test",), features=features,
            batch_size=batch_size, device="cpu", num_workers=0, cache_dir=cache, progress=False,
            shard_size=SHARD, extractor=extractor)
    return time.perf_counter() - started, cpu_seconds() - cpu


def time_rounds(args, data: Path, weights: Path) -> dict:
    """Alternating rounds of one kind and of every layer, one process and one loaded model."""
    import torch

    from extractors import layer_features, load_extractor

    torch.set_num_threads(args.threads)
    extractor = load_extractor(MODEL_ID, weights=weights)
    every = layer_features(MODEL_ID, "all", ["cls"])
    wall: dict[str, list[float]] = {"one": [], "all": []}
    cpu: dict[str, list[float]] = {"one": [], "all": []}
    with tempfile.TemporaryDirectory() as tmp:
        _extract(extractor, data, Path(tmp) / "warm", ["cls"], args.batch_size)  # warm-up
        for r in range(args.rounds):
            order = ("one", "all") if r % 2 == 0 else ("all", "one")
            for name in order:
                kinds = ["cls"] if name == "one" else every
                seconds, cpu_s = _extract(extractor, data, Path(tmp) / f"{name}{r}", kinds,
                                          args.batch_size)
                wall[name].append(seconds)
                cpu[name].append(cpu_s)
    return {"kinds_all": len(every), "wall_one_s": wall["one"], "wall_all_s": wall["all"],
            "cpu_one_s": cpu["one"], "cpu_all_s": cpu["all"],
            "wall_ratio": float(np.median(wall["all"]) / np.median(wall["one"])),
            "cpu_ratio": float(np.median(cpu["all"]) / np.median(cpu["one"])),
            "cpu_ratio_per_round": [a / o for a, o in zip(cpu["all"], cpu["one"])]}


def child_memory(args) -> None:
    """One ``--layers all`` extraction of ``args.n`` images; prints peak RSS above the model."""
    import torch

    from extractors import layer_features, load_extractor

    torch.set_num_threads(args.threads)
    extractor = load_extractor(MODEL_ID, weights=args.weights, options={"image_size": args.size})
    loaded = status_bytes("VmRSS")
    reset_peak()
    with tempfile.TemporaryDirectory() as tmp:
        from featkit.extraction import extract

        extract(MODEL_ID, "imagefolder", data_root=args.data, splits=("test",),
                features=layer_features(MODEL_ID, "all", ["cls"]), batch_size=args.batch_size,
                device="cpu", num_workers=0, cache_dir=tmp, progress=False, shard_size=SHARD,
                options={"image_size": args.size}, extractor=extractor)
    print(json.dumps({"n": args.n, "loaded_mb": loaded / 2**20,
                      "peak_above_model_mb": (status_bytes("VmHWM") - loaded) / 2**20}))


def memory_curve(args, root: Path, weights: Path) -> list[dict]:
    rows = []
    for n in args.ns:
        data = root / f"mem{n}"
        make_images(data, n, seed=n)
        command = [sys.executable, __file__, "--child-memory", "--n", str(n), "--data", str(data),
                   "--weights", str(weights), "--threads", str(args.threads), "--size",
                   str(args.size), "--batch-size", str(args.batch_size)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        kinds, width = 25, 192
        row["one_shard_of_every_kind_mb"] = SHARD * kinds * width * 4 / 2**20
        row["all_features_mb"] = n * kinds * width * 4 / 2**20
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def report_time(args, root: Path, weights: Path) -> None:
    make_images(root / "time", args.images)
    timing = time_rounds(args, root / "time", weights)
    print(json.dumps(timing), flush=True)
    print(f"every layer ({timing['kinds_all']} kinds) vs cls alone, {args.images} images at 224 px, "
          f"batch {args.batch_size}, {args.threads} thread(s), medians of {args.rounds} "
          f"alternating rounds: {timing['cpu_ratio']:.3f}x the CPU time (per round "
          f"{', '.join(f'{r:.3f}' for r in timing['cpu_ratio_per_round'])}), "
          f"{timing['wall_ratio']:.3f}x the wall-clock time; target <= 1.15x")


def report_memory(args, root: Path, weights: Path) -> None:
    rows = memory_curve(args, root, weights)
    print(f"peak RSS above the loaded model, --layers all (25 kinds x 192), shard {SHARD} rows, "
          f"{args.size} px:")
    for row in rows:
        print(f"  N={row['n']:>6}: {row['peak_above_model_mb']:7.1f} MB  (one shard of every kind "
              f"{row['one_shard_of_every_kind_mb']:.1f} MB; all features {row['all_features_mb']:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU time measures the work on a shared machine)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=112, help="input size of the memory runs")
    parser.add_argument("--ns", type=lambda t: [int(x) for x in t.split(",")],
                        default=[512, 1024, 2048, 4096])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--child-memory", action="store_true")
    parser.add_argument("--n", type=int)
    parser.add_argument("--data")
    parser.add_argument("--weights")
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args)
        return
    if args.quick:
        args.images, args.rounds, args.ns = 64, 2, [256, 512]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = root / "vit_tiny.safetensors"
        make_weights(weights)
        if not args.skip_time:
            report_time(args, root, weights)
        if not args.skip_memory:
            report_memory(args, root, weights)

if __name__ == "__main__":
    main()
