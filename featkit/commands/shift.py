"""``featkit shift``: a classifier fitted on ImageNet, scored on its shifted test sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    add_features,
    device,
    names,
    positive_float,
    positive_int,
    source_from,
    split_list,
)
from featkit.errors import FeatkitError

NAME = "shift"
HELP = "accuracy on ImageNet's shifted test sets (masked to their classes) next to ImageNet's own"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file", "save_probe": "file"}
DESCRIPTION = (
    "Fit one classifier on the reference dataset (--train, ImageNet): a linear probe (C chosen "
    "on val, as 'featkit probe linear', or a saved one with --probe), the weighted kNN, or "
    "zero-shot class embeddings of prompts by the model's text side. Score it on each --eval "
    "set with its scores restricted to the reference classes the set covers (ImageNet-R and -A: "
    "200; ObjectNet: its 113 classes, each standing for one or more ImageNet classes), and on "
    "the reference test split (ImageNet's official val) restricted to the same classes, as "
    "imagenet-testbed does. --json writes one record per shifted set, which 'featkit report "
    "--shift imagenet:SET' reads. Extract the shifted sets with --splits test."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks import knn, linear
    from featkit.tasks.shift import CLASSIFIERS, DEFAULT_SHIFTS, Settings

    parser.add_argument("--model", required=True,
                        help="model id or alias (see 'featkit list models')")
    parser.add_argument("--weights", default=None,
                        help="local weights file or directory the features were extracted with")
    parser.add_argument("--adapter", default=None,
                        help="peft adapter directory the features were extracted with")
    parser.add_argument("--train", default=Settings.reference,
                        help=f"reference dataset the classifier is fitted on (default: "
                        f"{Settings.reference})")
    parser.add_argument("--eval", type=names, default=",".join(DEFAULT_SHIFTS),
                        help=f"comma-separated shifted sets (default: {','.join(DEFAULT_SHIFTS)})")
    parser.add_argument("--classifier", default=Settings.classifier, choices=list(CLASSIFIERS),
                        help=f"default: {Settings.classifier}")
    add_features(parser)
    parser.add_argument("--probe", default=None,
                        help="a saved linear probe of the reference (e.g. 'featkit probe linear "
                        "--dataset imagenet' wrote it) instead of fitting one")
    parser.add_argument("--save-probe", default=None, help="write the fitted linear probe here")
    parser.add_argument("--normalization", default=linear.Settings.normalization,
                        choices=["l2", "standardize", "none"],
                        help=f"linear: feature normalisation (default: "
                        f"{linear.Settings.normalization})")
    parser.add_argument("--c-grid", default=None,
                        help="linear: comma-separated C values swept on val (default: as "
                        "'featkit probe linear')")
    parser.add_argument("--k", type=positive_int, default=None,
                        help="knn: neighbours (default: 20)")
    parser.add_argument("--temperature", type=positive_float, default=knn.Settings.temperature,
                        help=f"knn: vote temperature (default: {knn.Settings.temperature})")
    parser.add_argument("--train-only", action="store_true",
                        help="knn: neighbours from the reference's train split only (default: "
                        "train + val)")
    parser.add_argument("--templates", default=None,
                        help="zeroshot: file of prompt templates with {} for the class name, one "
                        f"per line or a JSON list (default: {Settings.templates[0]!r})")
    parser.add_argument("--roots", default=None,
                        help="NAME=DIR,... dataset roots to read class mappings from (ObjectNet's "
                        "mappings/; default: where the features were extracted from)")
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    add_ci(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    parser.add_argument("--json", default=None,
                        help="write the records (a JSON list, one per shifted set) to this file")


def _roots(text: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in split_list(text):
        name, sep, root = item.partition("=")
        if not sep or not name.strip() or not root.strip():
            raise FeatkitError(f"--roots entries are NAME=DIR, got {item!r}")
        pairs.append((name.strip(), root.strip()))
    return tuple(pairs)


def _c_grid(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(t) for t in split_list(text))
    except ValueError:
        raise FeatkitError(f"--c-grid must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from featkit.results import warnings_text, write_result
    from featkit.tasks import knn, linear, shift
    from featkit.tasks.intervals import interval_lines
    from featkit.text import read_texts

    templates = tuple(read_texts(args.templates)) if args.templates else shift.DEFAULT_TEMPLATES
    settings = shift.Settings(
        classifier=args.classifier, reference=args.train, probe=args.probe,
        linear_settings=linear.Settings(normalization=args.normalization,
                                        c_grid=_c_grid(args.c_grid), device=args.device),
        knn_settings=knn.Settings(ks=(args.k or 20,), temperature=args.temperature,
                                  train_only=args.train_only, device=args.device),
        templates=templates, device=args.device, data_roots=_roots(args.roots),
        ci=interval_from(args),
    )
    outcome = shift.run(source_from(args), split_list(args.eval), settings,
                        save_probe=args.save_probe, progress=not args.no_progress)
    records = outcome.records
    first = records[0]
    print(f"{first['model']} ({first['features']}), {first['settings']['classifier']} classifier "
          f"on {settings.reference}; shifted sets scored over the classes they cover")
    print(shift.summary_table(records))
    for record in records:
        text = interval_lines(record) + warnings_text(record)
        if text:
            print(f"{record['dataset']}:{text}")
    if args.json:
        print(f"wrote {Path(write_result(records, args.json))}", file=sys.stderr)
    probe = first["settings"].get("probe", {})
    if "saved_to" in probe:
        print(f"saved probe {probe['saved_to']}")
    return 0
