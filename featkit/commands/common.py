"""Argument helpers shared by subcommands, so every command spells its options the same way."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default: $FEATKIT_CACHE, else ./cache)",
    )


def add_model_dataset(parser: argparse.ArgumentParser, *, multi_dataset: bool = False) -> None:
    parser.add_argument("--model", required=True, help="model id or alias (see 'featkit list models')")
    parser.add_argument(
        "--dataset",
        required=True,
        help="dataset name" + (" or comma-separated names" if multi_dataset else "") + " (see 'featkit list datasets')",
    )
    parser.add_argument("--weights", default=None, help="local weights file or directory the features were extracted with")
    parser.add_argument("--adapter", default=None, help="peft adapter directory the features were extracted with")


def add_features(parser: argparse.ArgumentParser, default: str = "visual") -> None:
    parser.add_argument("--features", default=default, help=f"feature kind to analyse (default: {default})")


def add_outputs(parser: argparse.ArgumentParser, *, plot: bool = False) -> None:
    parser.add_argument("--json", default=None, help="write the result record to this JSON file")
    if plot:
        parser.add_argument("--plot", default=None, help="write a PNG figure to this path")


def split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def emit(record: dict[str, Any], table: str, json_path: str | None) -> None:
    """Print the readable table and write the JSON record when asked."""
    from featkit.results import write_result

    print(table)
    if json_path:
        path = write_result(record, json_path)
        print(f"wrote {Path(path)}", file=sys.stderr)


def source_from(args: argparse.Namespace):
    """The cached features a command reads (``--model``, ``--features``, ``--weights``,
    ``--adapter``, ``--cache-dir``)."""
    from featkit.tasks.loading import FeatureSource

    return FeatureSource(model=args.model, features=args.features, weights=args.weights,
                         adapter=args.adapter, cache_dir=args.cache_dir)
