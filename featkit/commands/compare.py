"""``featkit compare A.json B.json``: is model A better than model B on the same items?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from featkit.commands.ci import add_ci, interval_from

NAME = "compare"
HELP = "paired bootstrap interval and p-value of A - B on the same items (McNemar for accuracies)"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file"}
DESCRIPTION = (
    "Compare two result files (written with --json by the same command on the same data) item "
    "by item, from the per-item scores every record stores: the difference A - B of a metric "
    "with a paired percentile bootstrap interval (both resampled on the same items) and a "
    "two-sided bootstrap p-value, plus McNemar's exact test when the metric is an accuracy. "
    "Files with several records are paired by task and dataset. The records must have scored "
    "the same items in the same order (their sample-id digests are checked)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A.json", help="result file of model A")
    parser.add_argument("b", metavar="B.json", help="result file of model B")
    parser.add_argument("--metric", default=None,
                        help="metric to compare (default: the task's headline metric, e.g. top1 "
                        "or mAP)")
    add_ci(parser, default=0.95)
    parser.add_argument("--json", default=None, help="write the comparisons to this JSON file")


def _read(path: str) -> object:
    from featkit.errors import FeatkitError

    file = Path(path)
    if not file.is_file():
        raise FeatkitError(f"{path} does not exist; pass a result file written with --json")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatkitError(f"{path} is not valid JSON ({err})") from None


def run(args: argparse.Namespace) -> int:
    from featkit.results import write_result
    from featkit.tasks.compare import compare, comparison_table

    comparisons = compare(_read(args.a), _read(args.b), args.metric, interval_from(args),
                          names=(args.a, args.b))
    first = comparisons[0]
    print(f"A = {first.model_a} ({args.a}), B = {first.model_b} ({args.b}); {first.task}, "
          f"paired over the same {first.unit}")
    print(comparison_table(comparisons))
    for note in dict.fromkeys(c.note for c in comparisons if c.note):
        print(f"note: {note}")
    if args.json:
        path = write_result([c.row() for c in comparisons], args.json)
        print(f"wrote {path}", file=sys.stderr)
    return 0
