"""``featkit run SUITE``: a whole benchmark (models x datasets x tasks) in one resumable command."""

from __future__ import annotations

import argparse

from featkit.commands.common import add_cache_dir

NAME = "run"
HELP = "run a suite file (models x datasets x tasks): resumable, failures isolated, then the report"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "dir", "cache_dir": "dir"}
DESCRIPTION = (
    "Run every cell of a suite: extraction cells first (each model loaded once for all its "
    "datasets; under torchrun they are distributed as 'featkit extract' is), then every task "
    "cell, each writing the record its command writes. Cells whose record exists with the same "
    "settings, weights and data are skipped, so a rerun after a crash or after adding a model "
    "does only the new cells; a failing cell is reported and the rest go on. Ends with "
    "'featkit report' on the out folder (published values of the suite shown as expected / "
    "measured / difference). SUITE is a TOML file or a shipped suite (--list)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", metavar="SUITE",
                        help="suite file (TOML) or the name of a shipped suite")
    parser.add_argument("--out", default=None, help="results folder (default: the suite's out)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and which cells are done; run nothing")
    parser.add_argument("--no-report", action="store_true", help="skip 'featkit report' at the end")
    parser.add_argument("--list", action="store_true", help="list the shipped suites and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars inside cells")
    add_cache_dir(parser)


def run(args: argparse.Namespace) -> int:
    from featkit.errors import FeatkitError
    from featkit.suite import load_suite, run_suite, shipped_suites

    if args.list:
        from featkit.results import format_table

        rows = [{"suite": name, "file": str(path), "description": load_suite(path).description}
                for name, path in shipped_suites().items()]
        print(format_table(rows))
        return 0
    if not args.suite:
        raise FeatkitError("run: name a suite file or a shipped suite (featkit run --list)")
    result = run_suite(args.suite, out=args.out, cache_dir=args.cache_dir, dry_run=args.dry_run,
                       progress=not args.no_progress, report=not args.no_report)
    return 0 if result.ok else 1
