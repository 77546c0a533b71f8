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


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one ``featkit: error:`` line naming the subcommand, exit 2."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        command = self.prog.removeprefix("featkit").strip()
        where = f"{command}: " if command else ""
        hint = f" (see 'featkit {command} --help')" if command else " (see 'featkit --help')"
        print(f"featkit: error: {where}{message}{hint}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="featkit",
        description="Extract, cache and probe image embeddings of vision and vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"featkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=OneLineParser)
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
        sub.set_defaults(_run=module.run, _outputs=module.OUTPUTS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from featkit.errors import FeatkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        from featkit.commands.common import check_outputs

        check_outputs(args, args._outputs)  # before the work, so no result is lost at the end
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
