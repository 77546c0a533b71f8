"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations


class FeatkitError(Exception):
    """An error caused by input or environment that the user can fix; ``str(err)`` says how."""

    exit_code: int = 2


class MissingDataError(FeatkitError):
    """A dataset's files are not where we looked."""


class MissingWeightsError(FeatkitError):
    """A named pretrained model's weights are not available offline."""


class UnknownNameError(FeatkitError):
    """An unknown model, dataset, split or feature kind."""


class BadImageError(FeatkitError):
    """One or more images could not be decoded."""


class CacheError(FeatkitError):
    """A cache file is missing, ambiguous, locked or does not match the request."""


def closest(name: str, candidates: list[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' hint with the closest candidate names, or ''."""
    import difflib

    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not matches:
        lowered = name.lower()
        matches = [c for c in candidates if lowered in c.lower()][:n]
    return f" (did you mean {', '.join(matches)}?)" if matches else ""
