"""Importing plug-in modules that may be absent (an optional family or reader)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable


def import_present(modules: Iterable[str]) -> None:
    """Import each module; skip one that does not exist, but re-raise errors from inside it."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
