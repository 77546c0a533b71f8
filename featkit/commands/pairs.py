"""``featkit pairs``: do two images show the same object? (TWIN) Cosine similarity of cached
features, ROC-AUC, accuracy at a threshold chosen on val pairs, TAR at FAR."""

from __future__ import annotations

import argparse
from typing import Any

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    emit,
    non_negative_int,
    positive_int,
    source_from,
    unit_interval,
)

NAME = "pairs"
HELP = "same-object verification of image pairs: ROC-AUC, accuracy, TAR @ FAR of cosine scores"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file"}
DESCRIPTION = (
    "Score image pairs by the cosine similarity of their cached features: ROC-AUC, accuracy at "
    "the threshold that is best on the val pairs, and the true-accept rate at a false-accept "
    "rate (--far, default 1e-3) on the test pairs. --pairs FILE lists 'image_a,image_b,same' "
    "lines (sample ids of the dataset, any split; same 1 or 0); without it pairs are mined from "
    "--split: positives two images of one class, negatives each image's most similar image of "
    "another class under --mining-model's features (default: the probed model). The threshold "
    "pairs come from --val-pairs, else are mined from --val-split."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks.pairs import Settings

    add_model_dataset(parser, data_root=True)
    add_features(parser)
    parser.add_argument("--pairs", default=None,
                        help="pairs file of image_a,image_b,same lines (default: mine pairs)")
    parser.add_argument("--val-pairs", default=None,
                        help="pairs file the threshold is chosen on (default: mined from "
                        "--val-split)")
    parser.add_argument("--split", default=Settings.split, choices=["train", "val", "test"],
                        help=f"split mined for test pairs (default: {Settings.split})")
    parser.add_argument("--val-split", default=Settings.val_split,
                        choices=["train", "val", "test"],
                        help=f"split mined for threshold pairs (default: {Settings.val_split})")
    parser.add_argument("--mining-model", default=None,
                        help="model whose cached features pick the hardest negatives "
                        "(default: --model)")
    parser.add_argument("--per-image", type=positive_int, default=Settings.per_image,
                        help="positives and hardest negatives mined per image (default: "
                        f"{Settings.per_image})")
    parser.add_argument("--far", type=unit_interval, default=Settings.far,
                        help=f"false-accept rate of the TAR (default: {Settings.far:g})")
    parser.add_argument("--seed", type=non_negative_int, default=Settings.seed,
                        help=f"seed of the positives' draw (default: {Settings.seed})")
    add_ci(parser, unit="test pairs (ROC-AUC and TAR@FAR: within same and different pairs, "
           "recomputed)")
    add_cache_dir(parser)
    add_outputs(parser)


def pairs_table(record: dict[str, Any]) -> str:
    """The readable summary of a ``pairs`` record."""
    from featkit.results import metrics_table

    settings, counts = record["settings"], record["counts"]
    return "\n".join([
        f"{record['model']} on {record['dataset']} ({record['features']}), same-object pairs",
        f"test pairs: {settings['test_pairs']} ({counts['test_same']} same, "
        f"{counts['test_different']} different)",
        f"threshold {settings['threshold']:.4f}, best on val pairs {settings['val_pairs']} "
        f"(val accuracy {100 * settings['val_accuracy']:.2f} %); TAR at FAR = "
        f"{settings['far']:g} (achieved {settings['achieved_far']:.2g})",
        metrics_table(record),
    ])


def run(args: argparse.Namespace) -> int:
    from featkit.tasks import pairs
    from featkit.tasks.intervals import interval_lines

    settings = pairs.Settings(pairs=args.pairs, val_pairs=args.val_pairs, split=args.split,
                              val_split=args.val_split, mining_model=args.mining_model,
                              per_image=args.per_image, far=args.far, seed=args.seed,
                              ci=interval_from(args))
    (record,) = pairs.run(source_from(args), args.dataset, settings)
    emit(record, pairs_table(record) + interval_lines(record), args.json)
    return 0
