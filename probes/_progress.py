"""The one progress-bar helper of the probes (tqdm, imported only when a bar is shown)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], enabled: bool, desc: str) -> Iterable[T]:
    """``items`` wrapped in a transient tqdm bar labelled ``desc`` when ``enabled``, else as is.

    Callers that report per-step values check ``hasattr(bar, "set_postfix")``.
    """
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
