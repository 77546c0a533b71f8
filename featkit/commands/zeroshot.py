"""``featkit zeroshot``: zero-shot top-1/top-5 of cached image features against class prompts."""

from __future__ import annotations

import argparse
from typing import Any

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    add_model_dataset,
    add_outputs,
    device,
    emit,
    names,
    split_list,
)

NAME = "zeroshot"
HELP = "zero-shot top-1/top-5 of cached image features against the model's class-prompt embeddings"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file"}
DESCRIPTION = (
    "Zero-shot classification as in the CLIP paper: every class name is put into each prompt "
    "template, the prompts are embedded by the model's own text side (open_clip text towers, "
    "HF CLIP/SigLIP, or a VLM's last-token embeddings), each class embedding is the normalised "
    "mean of its normalised prompt embeddings, and each cached image feature is assigned the "
    "class of highest cosine similarity. Class embeddings are cached next to the image features. "
    "--dataset a,b --merge lets all datasets' classes compete; --label-map merges classes (a "
    "merged class scores as its best member). --ci LEVEL adds percentile bootstrap intervals "
    "of top-1 and top-5 over the images (a merged run's resampled within each dataset; "
    "mean_per_class, a mean over classes, gets none)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.classnames import builtin_template_sets
    from featkit.tasks.zeroshot import PRECISIONS, Settings

    add_model_dataset(parser, multi_dataset=True)
    parser.add_argument(
        "--features", type=names, default=None,
        help="image feature kind (default: the one the text side is aligned with: aligned for "
        "CLIP-style models, last_token for VLMs)")
    parser.add_argument(
        "--templates", default=Settings.templates,
        help=f"prompt templates: {', '.join(builtin_template_sets())}, 'dataset' (the dataset's "
        f"own CLIP prompts), or a file (.txt one per line, or .json) with {{}} for the class "
        f"name (default: {Settings.templates}, 'a photo of a {{}}.')")
    parser.add_argument(
        "--classnames", default=None,
        help="class names: a built-in list (e.g. imagenet for an imagefolder copy) or a file "
        "(.txt one per line in label order, or .json list / {raw: clean}) (default: the "
        "dataset's own clean list, else its names with underscores as spaces)")
    parser.add_argument("--split", default=Settings.split,
                        help=f"split whose images are classified (default: {Settings.split})")
    parser.add_argument("--merge", action="store_true",
                        help="one classifier over the union of the listed datasets' classes")
    parser.add_argument("--label-map", default=None,
                        help='JSON file {"old class": "existing class"} merging classes of one dataset')
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    parser.add_argument("--precision", default=Settings.precision, choices=list(PRECISIONS),
                        help=f"text tower precision on GPU (default: {Settings.precision})")
    add_ci(parser, unit="the scored images (--split)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser)


def zeroshot_table(record: dict[str, Any]) -> str:
    """The readable summary of a zero-shot record, with the intervals of --ci."""
    from featkit.results import format_table, metrics_table
    from featkit.tasks.intervals import interval_lines

    prov = record["provenance"]
    texts = prov["text"] if "per_dataset" in record else {record["dataset"]: prov["text"]}
    names = (prov["class_names"] if "per_dataset" in record
             else {record["dataset"]: prov["class_names"]})
    lines = [f"{record['model']} on {record['dataset']} ({record['features']}), zero-shot on "
             f"{record['settings']['split']}"]
    for dataset, text in texts.items():
        lines.append(f"{dataset}: {len(text['templates'])} template(s) '{text['template_set']}', "
                     f"{len(names[dataset]['names'])} class names ({names[dataset]['matched_by']}: "
                     f"{names[dataset]['source']})")
    lines.append(metrics_table(record))
    if "per_dataset" in record:
        rows = [{"dataset": name, "single top1": row["single"], "merged top1": row["merged"],
                 "drop (points)": f"{100 * row['drop']:+.2f}"}
                for name, row in record["per_dataset"].items()]
        lines.append(format_table(rows))
    return "\n".join(lines) + interval_lines(record)


def run(args: argparse.Namespace) -> int:
    from extractors.text_towers import image_kind
    from featkit.tasks import zeroshot
    from featkit.tasks.loading import FeatureSource

    features = args.features or image_kind(args.model, args.weights)
    source = FeatureSource(model=args.model, features=features, weights=args.weights,
                           adapter=args.adapter, cache_dir=args.cache_dir)
    settings = zeroshot.Settings(
        templates=args.templates, class_names=args.classnames, split=args.split,
        precision=args.precision, device=args.device, merge=args.merge,
        label_map=None if args.label_map is None else str(args.label_map),
        ci=interval_from(args),
    )
    records = zeroshot.run(source, split_list(args.dataset), settings,
                           progress=not args.no_progress)
    if len(records) == 1:
        emit(records[0], zeroshot_table(records[0]), args.json)
    else:
        from featkit.results import write_result

        print("\n\n".join(zeroshot_table(r) for r in records))
        if args.json:
            write_result(records, args.json)
    return 0
