"""Argument helpers shared by subcommands, so every command spells its options the same way."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default: $FEATKIT_CACHE, else ./cache)",
    )


def add_model_dataset(parser: argparse.ArgumentParser, *, multi_dataset: bool = False,
                      data_root: bool = False) -> None:
    """``--model``, ``--dataset``, ``--weights``, ``--adapter`` and, with ``data_root``,
    ``--data-root`` (the root given to ``featkit extract``: the cache file extracted from the
    data there is read, when several match)."""
    parser.add_argument("--model", required=True, help="model id or alias (see 'featkit list models')")
    parser.add_argument(
        "--dataset",
        required=True,
        help="dataset name" + (" or comma-separated names" if multi_dataset else "") + " (see 'featkit list datasets')",
    )
    parser.add_argument("--weights", default=None, help="local weights file or directory the features were extracted with")
    parser.add_argument("--adapter", default=None, help="peft adapter directory the features were extracted with")
    if data_root:
        parser.add_argument("--data-root", default=None,
                            help="the dataset root given to 'featkit extract': read the cache file "
                            "whose key matches the data there (default: the newest matching file)")


def add_features(parser: argparse.ArgumentParser, default: str = "visual") -> None:
    parser.add_argument("--features", default=default, help=f"feature kind to analyse (default: {default})")


def add_outputs(parser: argparse.ArgumentParser, *, plot: bool = False) -> None:
    parser.add_argument("--json", default=None, help="write the result record to this JSON file")
    if plot:
        parser.add_argument("--plot", default=None, help="write a PNG figure to this path")


def split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def emit(record: dict[str, Any], table: str, json_path: str | None) -> None:
    """Print the readable table and write the JSON record when asked."""
    from featkit.results import write_result

    print(table)
    if json_path:
        path = write_result(record, json_path)
        print(f"wrote {Path(path)}", file=sys.stderr)


def source_from(args: argparse.Namespace):
    """The cached features a command reads (``--model``, ``--features``, ``--weights``,
    ``--adapter``, ``--cache-dir`` and, where the command has it, ``--data-root``)."""
    from featkit.tasks.loading import FeatureSource

    return FeatureSource(model=args.model, features=args.features, weights=args.weights,
                         adapter=args.adapter, cache_dir=args.cache_dir,
                         data_root=vars(args).get("data_root"))


# --------------------------------------------------------------------------- checked values


def _number(text: str, kind: type, option_rule: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {option_rule}") from None
    return value


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type``: an integer >= 0."""
    value = _number(text, int, "a non-negative integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def positive_float(text: str) -> float:
    """argparse ``type``: a finite number > 0."""
    import math

    value = _number(text, float, "a positive number")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive finite number")
    return value


def non_negative_float(text: str) -> float:
    """argparse ``type``: a finite number >= 0."""
    import math

    value = _number(text, float, "a non-negative number")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative finite number")
    return value


def unit_interval(text: str) -> float:
    """argparse ``type``: a number strictly between 0 and 1."""
    value = _number(text, float, "a number between 0 and 1")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value


def workers(text: str) -> int | str:
    """argparse ``type``: ``auto`` or a non-negative number of worker processes."""
    return text if text == "auto" else non_negative_int(text)


def names(text: str) -> str:
    """argparse ``type``: a comma-separated list that names at least one item (kept as text)."""
    if not split_list(text):
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give comma-separated names")
    return text


def device(text: str) -> str:
    """argparse ``type``: a device featkit runs on (cpu, cuda, cuda:N, auto), checked now."""
    from featkit._device import resolve_device
    from featkit.errors import FeatkitError

    try:
        resolve_device(text)
    except FeatkitError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device ")) from None
    return text


# --------------------------------------------------------------------------- output paths


def check_writable(path: str | Path, option: str, *, folder: bool = False) -> None:
    """Fail now, in one line, when ``path`` (a file, or with ``folder`` a directory) could not
    be written at the end of the work: its nearest existing ancestor must be a writable
    directory (tried by creating a temporary file there)."""
    import tempfile

    from featkit.errors import FeatkitError

    target = Path(path).expanduser()
    if target.exists():
        if folder and not target.is_dir():
            raise FeatkitError(f"{option} {path}: exists and is not a directory")
        if not folder and target.is_dir():
            raise FeatkitError(f"{option} {path}: is a directory; give a file name")
    probe_dir = target if folder else target.parent
    ancestor = probe_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FeatkitError(f"{option} {path}: {ancestor} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise FeatkitError(f"{option} {path}: cannot write in {ancestor} "
                           f"({err.strerror or err}); choose another path") from None


def check_outputs(args: argparse.Namespace, outputs: dict[str, str]) -> None:
    """:func:`check_writable` for each output option a command declares in its ``OUTPUTS``
    (``{option dest: "file" or "dir"}``) and was given."""
    for name, kind in outputs.items():
        value = vars(args).get(name)
        if value is not None:
            check_writable(value, "--" + name.replace("_", "-"), folder=kind == "dir")
