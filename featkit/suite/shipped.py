"""The suites shipped with featkit (``featkit/suites/*.toml``), found by name."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from featkit.errors import FeatkitError, closest


def suites_folder() -> Path:
    """Where the shipped suite files are installed."""
    return Path(str(files("featkit").joinpath("suites")))


def shipped_suites() -> dict[str, Path]:
    """Shipped suite name (the file's stem) -> its file."""
    return {p.stem: p for p in sorted(suites_folder().glob("*.toml"))}


def resolve_suite(path: str | os.PathLike) -> Path:
    """A suite file: ``path`` when it exists, else the shipped suite of that name."""
    file = Path(path).expanduser()
    if file.is_file():
        return file
    shipped = shipped_suites()
    if str(path) in shipped:
        return shipped[str(path)]
    raise FeatkitError(f"no suite file {path}{closest(str(path), list(shipped))}; give a "
                       f"TOML file or a shipped suite ({', '.join(shipped) or 'none'})")
