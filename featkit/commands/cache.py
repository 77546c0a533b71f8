"""``featkit cache ls|prune``: what the cache holds, checked against the data on disk, and
removing what can no longer be used (stale, corrupt and foreign files, orphan shards and locks)."""

from __future__ import annotations

import argparse
import json
import sys

from featkit.commands.common import add_cache_dir

NAME = "cache"
HELP = "list the cache files (status against the data on disk) or prune stale ones"
DESCRIPTION = (
    "'ls' lists every cache file (model, dataset, split, n, kinds, key, size, status) and every "
    "unfinished run. A file is complete, stale (its data changed since extraction), no data (its "
    "data root cannot be read now), corrupt or foreign. 'prune' removes stale, corrupt and "
    "foreign files and orphan shards, temporary files and locks; it only lists them unless "
    "given --yes."
)
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {}
COLUMNS = ["model", "dataset", "split", "n", "kinds", "key", "size", "status"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("ls", help="list cache files and unfinished runs with their status")
    pruning = actions.add_parser("prune", help="remove stale, corrupt and foreign files and orphans "
                                               "(a dry run unless --yes)")
    for sub in (listing, pruning):
        sub.add_argument("--verify", action="store_true",
                         help="read every file's data to check its checksums (slower)")
        add_cache_dir(sub)
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.add_argument("--paths", action="store_true", help="add a column with each path")
    pruning.add_argument("--yes", action="store_true", help="delete (default: only list what "
                                                            "would be deleted)")


def run(args: argparse.Namespace) -> int:
    from featkit.cache import cache_root
    from featkit.errors import CacheError
    from featkit.inventory import human_size, prune, scan
    from featkit.results import format_table

    root = cache_root(args.cache_dir)
    if not root.is_dir():
        raise CacheError(f"no cache under {root} (set --cache-dir or $FEATKIT_CACHE)")
    entries = scan(root, verify=args.verify)
    if args.action == "ls":
        rows = [e.row() for e in entries]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(format_table(rows, COLUMNS + (["path"] if args.paths else [])))
        return 0
    doomed = [e for e in entries if e.prunable]
    if not doomed:
        print(f"nothing to prune under {root}")
        return 0
    total = human_size(sum(e.size for e in doomed))
    if not args.yes:
        rows = [{**e.row(), "action": "would remove"} for e in doomed]
        print(format_table(rows, COLUMNS + ["path"]))
        print(f"{len(doomed)} entries ({total}) would be removed; rerun with --yes to delete them",
              file=sys.stderr)
        return 0
    rows = [{**e.row(), "action": outcome} for e, outcome in prune(doomed)]
    print(format_table(rows, COLUMNS + ["action", "path"]))
    removed = sum(1 for r in rows if r["action"] == "removed")
    print(f"removed {removed} of {len(doomed)} entries (up to {total})", file=sys.stderr)
    return 0
