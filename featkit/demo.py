"""The steps of ``featkit demo``, each printing what it did and where it wrote.

Every probe adds its step here, so the demo always shows the whole toolkit working offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATASET = "digits"
MODELS = ("pixels:8", "test:tiny-clip")


@dataclass(frozen=True)
class DemoContext:
    cache_dir: str | os.PathLike | None
    out: Path
    progress: bool


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def step_extract(ctx: DemoContext) -> None:
    from featkit.extraction import extract, iter_summaries_table
    from featkit.results import format_table

    for model in MODELS:
        say(f"extract: {model} on {DATASET} (train/val/test)")
        summaries = extract(model, DATASET, cache_dir=ctx.cache_dir, progress=ctx.progress, num_workers=0)
        print(format_table(list(iter_summaries_table(summaries)), ["split", "n", "dims", "status", "file"]))


STEPS: list[Callable[[DemoContext], None]] = [step_extract]


def run_demo(*, cache_dir: str | os.PathLike | None = None, out: Path = Path("results/demo"), progress: bool = True) -> None:
    """Run every demo step in order."""
    ctx = DemoContext(cache_dir, Path(out), progress)
    ctx.out.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        step(ctx)
