"""``featkit extract``: fill the cache with a model's features of a dataset's splits."""

from __future__ import annotations

import argparse
import os
import sys
import time

from featkit.commands.common import (
    add_cache_dir,
    device,
    names,
    non_negative_int,
    positive_int,
    split_list,
    workers,
)

NAME = "extract"
HELP = "extract features of a dataset's splits into the HDF5 cache (resumable)"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"cache_dir": "dir"}
DESCRIPTION = (
    "Extract features of every image of the requested splits into the cache, one HDF5 file per "
    "(model, weights, preprocessing, dataset, split). A killed run resumes where it stopped."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model id (family:name) or alias; see 'featkit list models'")
    parser.add_argument("--dataset", required=True, help="dataset name; see 'featkit list datasets'")
    parser.add_argument("--data-root", default=None, help="dataset root (default: $FEATKIT_DATA/<dataset> or ./data/<dataset>)")
    parser.add_argument("--splits", type=names, default=None, help="comma-separated splits (default: the dataset's own: train,val,test, or test alone for the shifted test sets such as imagenet-r)")
    parser.add_argument("--features", type=names, default=None, help="comma-separated feature kinds (default: the model's defaults); layer kinds such as cls@12, patch_mean@-2, last_token@20 too")
    parser.add_argument("--layers", type=names, default=None, help="features of every layer, in the same pass: 'all' or block numbers (1 = the first, -1 = the last), e.g. --layers=-1,-2,12 (with '=', as the list starts with a minus); adds cls@L and patch_mean@L of the vision tower and last_token@L of a VLM's language model to --features ('featkit list models' shows each model's layers)")
    parser.add_argument("--weights", default=None, help="local weights file or directory (offline)")
    parser.add_argument("--adapter", default=None, help="peft adapter directory to apply (models that take adapters: hf VLMs)")
    parser.add_argument("--instruction", default=None, help="instruction for last_token embeddings (VLMs; the option instruction)")
    parser.add_argument("--trust-remote-code", action="store_true", help="hf models: run the modelling code a checkpoint ships (config.json auto_map) through its registered adapter (the option trust_remote_code); off unless given")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option the model declares, e.g. image_size=224 (repeatable; 'featkit list models' shows each model's options)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--device", type=device, default="auto", help="auto|cpu|cuda[:N] (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="autocast precision on GPU (features are stored as float32)")
    parser.add_argument("--num-workers", type=workers, default="auto", help="image-decoding worker processes (default: auto)")
    parser.add_argument("--shard-size", type=positive_int, default=None, help="rows per resumable shard (default: 1024)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable images (recorded in the file) instead of stopping")
    parser.add_argument("--max-pixels", type=non_negative_int, default=None, help="images with more pixels are bad images (named; --skip-bad leaves them out); default 178956970, PIL's decompression-bomb limit; 0 = no limit")
    parser.add_argument("--overwrite", action="store_true", help="recompute even if the cache has these features")
    parser.add_argument("--verify", action="store_true", help="hash every image's bytes into the cache key (default: file size and mtime); a file extracted without it, or from other bytes, is rebuilt")
    parser.add_argument("--distributed", action="store_true", help="split the work across the processes of a torchrun launch (automatic under torchrun)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)


def run(args: argparse.Namespace) -> int:
    from featkit.distributed import launched_by_torchrun
    from featkit.errors import FeatkitError
    from featkit.extraction import (
        DEFAULT_MAX_PIXELS,
        DEFAULT_SHARD_SIZE,
        extract,
        iter_summaries_table,
    )
    from featkit.results import format_table

    if args.distributed and not launched_by_torchrun():
        raise FeatkitError("--distributed runs under torchrun, e.g. 'torchrun --nproc_per_node=2 -m featkit extract ...'")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FeatkitError(f"--option {item!r}: expected KEY=VALUE, e.g. --option image_size=224")
        options[key.strip()] = value.strip()
    if args.instruction:
        options["instruction"] = args.instruction
    if args.trust_remote_code:
        options["trust_remote_code"] = "true"
    features = split_list(args.features) or None
    if args.layers:
        from extractors import layer_features

        features = layer_features(args.model, args.layers, features)
    started = time.perf_counter()
    summaries = extract(
        args.model,
        args.dataset,
        data_root=args.data_root,
        splits=split_list(args.splits) or None,
        features=features,
        weights=args.weights,
        adapter=args.adapter,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        verify=args.verify,
        skip_bad=args.skip_bad,
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        progress=not args.no_progress,
        options=options,
    )
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for the job
    print(format_table(list(iter_summaries_table(summaries)), ["split", "n", "dims", "seconds", "status", "file"]))
    skipped = sum(len(s.skipped) for s in summaries)
    if skipped:
        print(f"featkit: {skipped} unreadable image(s) left out; their ids are in each file's 'skipped_ids'", file=sys.stderr)
    print(f"{args.model} on {args.dataset}: {len(summaries)} file(s) in {time.perf_counter() - started:.1f} s")
    return 0
