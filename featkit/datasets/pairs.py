"""Pairs files for same-object verification (TWIN): ``image_a,image_b,same`` lines.

``image_a`` and ``image_b`` are sample ids as the dataset's reader names them (the ids stored in
the cache); ``same`` is ``1``/``0`` (also ``true``/``false`` or ``yes``/``no``). A first line that is not a
pair (``image_a,image_b,same``) is a header.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.datasets.base import DatasetFormatError
from featkit.errors import FeatkitError

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@dataclass(frozen=True)
class PairList:
    """Image pairs: ``first[i]`` and ``second[i]`` (sample ids) show the same object when
    ``same[i]``; ``source`` names the file."""

    first: tuple[str, ...]
    second: tuple[str, ...]
    same: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.first)


def read_pairs(path: str | os.PathLike) -> PairList:
    """Read a pairs file; a malformed line is a one-line error naming ``file:line``, and a file
    without both same and different pairs cannot be scored."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"pairs file {path} does not exist")
    first, second, same = [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not cells or not "".join(cells):
                continue
            flag = cells[2].lower() if len(cells) == 3 else None
            if not first and flag not in _TRUE | _FALSE and len(cells) == 3:
                continue  # a header line
            if len(cells) != 3 or not cells[0] or not cells[1] or flag not in _TRUE | _FALSE:
                raise DatasetFormatError(f"{path}:{lineno}: expected 'image_a,image_b,same' with "
                                         f"same 1 or 0, got {','.join(row)!r}")
            first.append(cells[0])
            second.append(cells[1])
            same.append(flag in _TRUE)
    labels = np.asarray(same, dtype=bool)
    if not labels.any() or labels.all():
        raise FeatkitError(f"pairs file {path}: needs both same (1) and different (0) pairs; "
                           f"has {int(labels.sum())} same and {int((~labels).sum())} different")
    return PairList(tuple(first), tuple(second), labels, str(path))
