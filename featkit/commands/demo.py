"""``featkit demo``: the whole toolkit, offline, end to end on scikit-learn's digits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from featkit.commands.common import add_cache_dir

NAME = "demo"
HELP = "run the whole pipeline offline on the bundled digits (first command to try)"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "dir", "cache_dir": "dir"}
DESCRIPTION = (
    "Extract features of scikit-learn's handwritten digits with the offline extractors "
    "(raw pixels and a tiny random CLIP), then run every probe on them, printing what it did and "
    "where it wrote the cache and results."
)

MODELS = ("pixels:8", "test:tiny-clip")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_dir(parser)
    parser.add_argument("--out", default="results/demo", help="where result JSONs and plots go (default: results/demo)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from featkit.cache import cache_root
    from featkit.demo import run_demo

    started = time.perf_counter()
    out = Path(args.out)
    run_demo(cache_dir=args.cache_dir, out=out, progress=not args.no_progress)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; cache: {cache_root(args.cache_dir)}, results: {out}")
    return 0
