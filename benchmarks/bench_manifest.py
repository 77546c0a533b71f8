"""Reading an iNat2021-shaped manifest (2.7 M rows, 10,000 classes, generated): time and peak RSS.

FG-BMK's iNat2021 split has 2,686,843 train and 100,000 test images of 10,000 classes; the
generated manifest has that shape, with paths as long as iNat2021's
(``train/01234_Plantae_..._Genus_species/<uuid>.jpg``). Each reader runs in a fresh process and
reads all three splits (``val`` carved from train, the disjointness check included):

- ``manifest``: ``open_dataset("manifest", root).samples(split)`` (splits stored as arrays);
- baseline ``lists``: the same rows as one ``Sample`` object per row, through the base reader's
  ``check_disjoint`` and ``carve_val`` (what the manifest reader did before);
- floor ``lines``: reading the files' lines and nothing else.

Peak RSS is the process's VmHWM; the import baseline (interpreter, NumPy, featkit.datasets) is
printed too. Target: peak RSS below 1 GB.

    python benchmarks/bench_manifest.py [--rows 2786843] [--classes 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_ROWS = 100_000


def generate(root: Path, rows: int, classes: int, seed: int = 0) -> None:
    """``train.csv``/``test.csv`` of the iNat2021 shape, one image file (the reader checks the
    first row of each split), no classes.txt (integer labels give the classes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = [f"{c:05d}_Plantae_Tracheophyta_Magnoliopsida_Asterales_Asteraceae_Genus{c}_"
             f"species{c % 97}" for c in range(classes)]
    for split, n in (("train", rows - TEST_ROWS), ("test", TEST_ROWS)):
        labels = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)])
        with (root / f"{split}.csv").open("w") as handle:
            for start in range(0, n, 100_000):
                chunk = labels[start:start + 100_000]
                ids = rng.integers(0, 2**63, size=(len(chunk), 2), dtype=np.int64)
                handle.write("".join(
                    f"{split}/{names[y]}/{a:016x}-{b:016x}.jpg,{y}\n"
                    for y, (a, b) in zip(chunk.tolist(), ids.tolist())))
        with (root / f"{split}.csv").open() as handle:
            first = root / handle.readline().rsplit(",", 1)[0]
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_bytes(b"")


def measure(how: str, root: Path) -> dict[str, float]:
    """One reader in this (fresh) process."""
    import _measure

    from featkit.datasets import open_dataset
    from featkit.datasets.base import Sample, carve_val, check_disjoint

    imported = _measure.status_bytes("VmRSS")
    started = time.perf_counter()
    if how == "manifest":
        ds = open_dataset("manifest", root)
        counts = {s: len(ds.samples(s)) for s in ("train", "val", "test")}
        classes = len(ds.class_names)
    elif how == "lists":
        import csv

        splits = {}
        for split in ("train", "test"):
            with (root / f"{split}.csv").open(newline="") as handle:
                splits[split] = [Sample(r[0], int(r[1]), str(root / r[0]))
                                 for r in csv.reader(handle)]
        check_disjoint("manifest", splits)
        splits["train"], splits["val"] = carve_val(splits["train"])
        counts = {s: len(v) for s, v in splits.items()}
        classes = len({s.label for v in splits.values() for s in v})
    else:
        counts, classes = {}, 0
        for split in ("train", "test"):
            with (root / f"{split}.csv").open("rb") as handle:
                counts[split] = sum(1 for _ in handle)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak": _measure.status_bytes("VmHWM"), "imported": imported,
            "rows": sum(counts.values()), "classes": classes}


def run(how: str, root: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--measure", how, "--root", str(root)],
                         capture_output=True, text=True, cwd=HERE)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_786_843)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--keep", default=None, help="generate into (or reuse) this folder")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.root))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "train.csv").exists():
            started = time.perf_counter()
            generate(root, args.rows, args.classes)
            print(f"generated {args.rows:,} rows, {args.classes:,} classes in "
                  f"{time.perf_counter() - started:.0f} s "
                  f"({sum(f.stat().st_size for f in root.glob('*.csv')) / 1e6:.0f} MB)")
        results = {how: run(how, root) for how in ("lines", "manifest", "lists")}
    gb = 1024 ** 3
    for how, r in results.items():
        print(f"{how:9s} {r['seconds']:6.1f} s  peak RSS {r['peak'] / gb:.2f} GB (after imports "
              f"{r['imported'] / gb:.2f} GB)  rows {int(r['rows']):,}  classes "
              f"{int(r['classes']):,}")
    new, old, floor = results["manifest"], results["lists"], results["lines"]
    print(f"manifest reader: peak RSS {new['peak'] / gb:.2f} GB (target < 1 GB), "
          f"{new['peak'] / old['peak']:.2f}x the list reader's, time "
          f"{new['seconds'] / old['seconds']:.2f}x the list reader's, "
          f"{new['seconds'] / floor['seconds']:.1f}x reading the lines")


if __name__ == "__main__":
    main()
