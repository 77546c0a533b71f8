"""The steps of ``featkit demo``, each printing what it did and where it wrote.

The probes run as the tiny offline suite (``featkit run tiny``: every probe adds its task
there), then zero-shot and multiple choice on the tiny models, the adaptation of a tiny VLM,
and the report over everything, so the demo always shows the whole toolkit working offline.
"""

from __future__ import annotations

import os
import time
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


def _cli(ctx: DemoContext, *args: str) -> None:
    """Run a featkit subcommand in-process, exactly as a user would type it."""
    from featkit.cli import main
    from featkit.errors import FeatkitError

    argv = list(args)
    if args[0] != "report":
        if ctx.cache_dir is not None:
            argv += ["--cache-dir", str(ctx.cache_dir)]
        if not ctx.progress:
            argv.append("--no-progress")
    print("$ featkit " + " ".join(argv), flush=True)
    if main(argv) != 0:
        raise FeatkitError(f"demo step 'featkit {' '.join(args[:1])}' failed")


def step_suite(ctx: DemoContext) -> None:
    """The tiny offline suite (``featkit/suites/tiny.toml``): extraction of both models, then
    retrieval, linear probes, the kNN probe, the PGD sweep and FG-BMK's protocol; cells done
    before are skipped."""
    say(f"suite 'tiny': extract {', '.join(MODELS)} on {DATASET}, then retrieval (leave-one-out "
        f"mAP), linear probes (C chosen on val, refit, scored once on test), kNN (DINOv2 "
        f"protocol) on test:tiny-clip aligned features, PGD on its visual features, and "
        f"FG-BMK's protocol (--protocol fgbmk) on its last class tokens")
    _cli(ctx, "run", "tiny", "--out", str(ctx.out), "--no-report")


def step_text(ctx: DemoContext) -> None:
    """Zero-shot on test:tiny-clip's cached features (the suite extracted them), then 5-way
    questions with its hardest zero-shot negatives, scored by the CLIP and by the tiny LLaVA."""
    say(f"zero-shot: test:tiny-clip aligned features against its text tower's class prompts "
        f"(CLIP's {DATASET} template) on {DATASET}/test")
    _cli(ctx, "zeroshot", "--model", "test:tiny-clip", "--dataset", DATASET, "--templates",
         "dataset", "--json", str(ctx.out / "zeroshot-tiny-clip.json"))
    questions = ctx.out / "mc" / f"{DATASET}-clip.jsonl"
    say("multiple choice: 5-way questions whose distractors are test:tiny-clip's 4 hardest "
        "zero-shot negatives (seed 002's recipe), scored by the CLIP (image-option cosine) and "
        "by the tiny LLaVA (option log-likelihood, image + question computed once per question)")
    _cli(ctx, "mc", "build", "--dataset", DATASET, "--distractors", "clip:test:tiny-clip",
         "--templates", "dataset", "--choices", "5", "--seed", "0", "--limit", "100", "--out",
         str(questions))
    for model in ("test:tiny-clip", "test:tiny-llava"):
        _cli(ctx, "mc", "score", "--model", model, "--questions", str(questions), "--templates",
             "dataset", "--json", str(ctx.out / f"mc-{_slug(model)}.json"))


def step_adapt(ctx: DemoContext) -> None:
    from featkit.adapt import AdaptConfig, adapt, caption_pairs
    from featkit.datasets import open_dataset
    from featkit.extraction import extract, iter_summaries_table
    from featkit.results import format_table
    from featkit.testing.datasets import make_cub

    say("adapt: test:tiny-llava, InfoNCE + LoRA on caption pairs of a generated CUB (30 steps)")
    cub = make_cub(ctx.out / "data" / "cub", n_classes=5, train_per_class=6, test_per_class=4)
    pairs = caption_pairs(open_dataset("cub", cub.root), "train")
    result = adapt("test:tiny-llava", pairs, ctx.out / "adapter-tiny-llava-cub",
                   config=AdaptConfig(steps=30, batch_size=8, lr=1e-3, save_every=30),
                   device="cpu", progress=ctx.progress)
    print(f"loss {result.first_loss:.3f} -> {result.final_loss:.3f}; adapter: {result.adapter}; plot: {result.plot_path}")
    for adapter in (None, result.adapter):
        say(f"extract: test:tiny-llava last_token on the generated CUB, {'with' if adapter else 'without'} the adapter")
        summaries = extract("test:tiny-llava", "cub", data_root=cub.root, features=["last_token"], adapter=adapter,
                            cache_dir=ctx.cache_dir, progress=ctx.progress, num_workers=0)
        print(format_table(list(iter_summaries_table(summaries)), ["split", "n", "dims", "status", "file"]))
        args = ["probe", "knn", "--model", "test:tiny-llava", "--dataset", "cub", "--features", "last_token",
                "--k", "1,5", "--json", str(ctx.out / f"knn-tiny-llava-cub-{'adapted' if adapter else 'base'}.json")]
        _cli(ctx, *args, *(["--adapter", str(adapter)] if adapter else []))


def step_report(ctx: DemoContext) -> None:
    say("report: tables, rank statistics and figures from the result JSONs above")
    _cli(ctx, "report", str(ctx.out), "--out", str(ctx.out / "report"))


def _slug(model: str) -> str:
    return model.replace(":", "-")


STEPS: list[Callable[[DemoContext], None]] = [
    step_suite,
    step_text,
    step_adapt,
    step_report,
]


def run_demo(*, cache_dir: str | os.PathLike | None = None, out: Path = Path("results/demo"), progress: bool = True) -> None:
    """Run every demo step in order."""
    ctx = DemoContext(cache_dir, Path(out), progress)
    ctx.out.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        started = time.perf_counter()
        step(ctx)
        print(f"[{step.__name__.removeprefix('step_')}: {time.perf_counter() - started:.1f} s]", flush=True)
