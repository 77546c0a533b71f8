"""``featkit info FILE.h5``: what a cache file holds and where it came from."""

from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = "show the contents and provenance of a cache file"


#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a cache .h5 file")
    parser.add_argument("--json", action="store_true", help="print the attributes as JSON")
    parser.add_argument("--verify", action="store_true",
                        help="read all the data to check its checksums (flipped bytes)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import h5py

    from featkit.cache import FEATURES_GROUP, _decode_attrs
    from featkit.cache_files import h5py_reason, inspect_file
    from featkit.errors import CacheError

    path = Path(args.file)
    try:
        with h5py.File(path, "r") as handle:
            attrs = _decode_attrs(handle.attrs)
            shapes = {k: tuple(v.shape) for k, v in handle[FEATURES_GROUP].items()}
            checksums = all(v.fletcher32 for v in handle[FEATURES_GROUP].values())
            n_classes = len(handle["class_names"])
    except (OSError, KeyError) as err:
        raise CacheError(f"{args.file} is not a readable featkit cache file ({h5py_reason(err)}); "
                         f"re-extract it") from None
    problem = inspect_file(path, data=args.verify)[1]
    status = problem or ("ok (checksums verified)" if args.verify and checksums else "ok")
    if args.json:
        print(json.dumps({"file": args.file, "features": shapes, "status": status,
                          "checksums": "fletcher32" if checksums else "none", **attrs},
                         indent=2, default=str))
        return 0
    print(f"file         {args.file}")
    print(f"{'status':<12} {status}")
    for name in ("model", "weights", "dataset", "split", "n", "data_root", "created_at", "featkit_version", "complete"):
        print(f"{name:<12} {attrs.get(name)}")
    print(f"{'classes':<12} {n_classes}")
    for kind, shape in shapes.items():
        print(f"{'features':<12} {kind}: {shape[0]} x {shape[1] if len(shape) > 1 else 1}")
    print(f"{'checksums':<12} {'fletcher32 per chunk' if checksums else 'none (written before featkit stored them)'}")
    print(f"{'preprocess':<12} {json.dumps(attrs.get('preprocessing'))}")
    print(f"{'settings':<12} {json.dumps(attrs.get('settings'))}")
    if attrs.get("skipped_ids"):
        print(f"{'skipped':<12} {len(attrs['skipped_ids'])}: {', '.join(attrs['skipped_ids'][:5])}")
    return 0
