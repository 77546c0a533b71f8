"""The ``featkit`` command: parses arguments and dispatches to ``featkit.commands.<name>``.

User errors (:class:`~featkit.errors.FeatkitError`) print one line and exit non-zero, without a
traceback; Ctrl-C says how to resume.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from featkit._version import __version__
from featkit.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featkit",
        description="Extract, cache and probe image embeddings of vision and vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"featkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"featkit.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"featkit.commands.{name}":
                continue
            raise
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from featkit.errors import FeatkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except FeatkitError as err:
        print(f"featkit: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("featkit: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno == errno.ENOSPC:
            print(f"featkit: error: disk full ({err.filename or 'cache'}); free space or use --cache-dir", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
