"""Dataset interface: named splits of ``(sample_id, image, label)`` plus class names.

Readers list their samples cheaply (file paths, or in-memory arrays) and decode images lazily in
:meth:`ImageDataset.load_image`, so extraction can decode in DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featkit.datasets.images import DEFAULT_MAX_PIXELS, decode_image
from featkit.errors import MissingDataError, UnknownNameError
from probes.splits import VAL_FRACTION, VAL_SEED, stratified_split

SPLITS = ("train", "val", "test")


class DatasetFormatError(MissingDataError):
    """A dataset's annotation files exist but are malformed; the message names ``file:line``."""


@dataclass(frozen=True)
class Sample:
    """One image: a stable id (usually its path relative to the root), its label and a locator
    (a file path, or an index into an in-memory source) that :meth:`ImageDataset.load_image` reads.

    ``attributes``: what else the reader knows about the image, by name (a manifest's extra
    columns, e.g. ``{"fgd": "red", "env": "indoor"}``); empty by default. It takes no part in
    comparisons, hashing or cache keys (those use ids and labels only)."""

    sample_id: str
    label: int
    locator: Any
    attributes: Mapping[str, str] = field(default_factory=dict, compare=False)


class ImageDataset:
    """Base class. Subclasses set ``name``, ``class_names`` and implement :meth:`_official_splits`.

    ``train``/``val``/``test`` are always available: when the dataset has no official validation
    split, ``val`` is carved from the official train split (seeded, stratified, ~10 %) and ``train``
    is the rest, so selecting hyper-parameters on ``val`` never touches ``test``.
    """

    name: str = ""
    homepage: str = ""
    #: the pixel limit :meth:`load_image` enforces (0 = none); extraction sets it from --max-pixels
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self._splits: dict[str, list[Sample]] | None = None

    # -- to implement -------------------------------------------------------------------------
    def _official_splits(self) -> dict[str, list[Sample]]:
        """``{"train": [...], "test": [...]}`` and ``"val"`` when the dataset has an official one."""
        raise NotImplementedError

    def load_image(self, sample: Sample):
        """Decode one image through the one decode path (:mod:`featkit.datasets.images`): by
        content, within :attr:`max_pixels`, fully loaded (truncated files fail here), in RGB."""
        return decode_image(sample.locator, max_pixels=self.max_pixels)

    # -- provided -----------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Class names indexed by label (readers set them while listing their splits)."""
        if not hasattr(self, "_class_names"):
            self._all_splits()
        return self._class_names

    @class_names.setter
    def class_names(self, value: list[str]) -> None:
        self._class_names = list(value)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._all_splits())

    def samples(self, split: str) -> list[Sample]:
        splits = self._all_splits()
        if split not in splits:
            raise UnknownNameError(
                f"dataset '{self.name}' has no split '{split}' (splits: {', '.join(splits)})"
            )
        return splits[split]

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root), "classes": len(self.class_names)}

    def data_folder(self) -> Path:
        """The folder this reader actually reads (readers that accept several roots for the same
        data override it)."""
        return self.root

    def key_root(self) -> str:
        """Where the data lives, as the cache key names it: :meth:`data_folder` resolved, so the
        equivalent roots a reader accepts (CUB's folder or its parent) share one cache entry."""
        return str(self.data_folder().resolve())

    def image_path(self, sample: Sample) -> str:
        """Where the image lives, for error messages."""
        return str(sample.locator) if isinstance(sample.locator, (str, os.PathLike)) else f"{self.name}:{sample.sample_id}"

    def _all_splits(self) -> dict[str, list[Sample]]:
        if self._splits is None:
            official = self._official_splits()
            check_disjoint(self.name, official)
            if "val" not in official:
                train, val = carve_val(official["train"])
                official = {"train": train, "val": val, **{k: v for k, v in official.items() if k != "train"}}
            self._splits = {k: official[k] for k in SPLITS if k in official}
            self._splits.update({k: v for k, v in official.items() if k not in SPLITS})
        return self._splits

    def require(self, *paths: str | os.PathLike, how: str = "") -> None:
        """Fail with one line if the first expected file is missing."""
        for path in paths:
            full = self.root / path
            if not full.exists():
                hint = how or (f"download it from {self.homepage} and pass --data-root DIR" if self.homepage else "pass --data-root DIR")
                raise MissingDataError(
                    f"{self.name}: no data under {self.root} (expected {full}); {hint}"
                )


def read_utf8(path: Path) -> str:
    """The text of an annotation file, decoded as UTF-8 whatever the locale (a leading byte-order
    mark is dropped); a byte that is not UTF-8 is a one-line :class:`DatasetFormatError` naming
    the file, line and column instead of a ``UnicodeDecodeError``."""
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise DatasetFormatError(
            f"{path}:{line}: byte 0x{data[err.start]:02x} (column {column}) is not UTF-8; "
            "save the file as UTF-8"
        ) from None


def check_disjoint(dataset: str, splits: dict[str, list[Sample]]) -> None:
    """Fail with one line when one image is listed twice: in two official splits (evaluation
    images leaking into training or model selection) or twice in one split. Images are compared
    by their normalised file path (by sample id for in-memory images); no official layout
    featkit reads lists an image twice."""
    seen: dict[str, str] = {}
    for split, samples in splits.items():
        for sample in samples:
            locator = sample.locator
            where = (os.path.normpath(locator) if isinstance(locator, (str, os.PathLike))
                     else sample.sample_id)
            first = seen.get(where)
            if first is None:
                seen[where] = split
            elif first == split:
                raise DatasetFormatError(
                    f"{dataset}: {where} is listed twice in the {split} split; remove one of them"
                )
            else:
                raise DatasetFormatError(
                    f"{dataset}: {where} is in both the {first} and the {split} split (the same "
                    "image in two splits leaks one into the other); remove it from one of them"
                )


def carve_val(
    train: Sequence[Sample], fraction: float = VAL_FRACTION, seed: int = VAL_SEED
) -> tuple[list[Sample], list[Sample]]:
    """Split ``train`` into (train, val), stratified by label, seeded and independent of order.

    Each class with at least two samples gives ``max(1, round(fraction * n))`` samples to val,
    chosen by :func:`probes.splits.stratified_split` over its samples sorted by id (the one
    validation splitter, so probes that carve validation data draw the same stream).
    """
    _, val_idx = stratified_split([s.label for s in train], fraction, seed,
                                  keys=[s.sample_id for s in train])
    val_ids = {train[i].sample_id for i in val_idx.tolist()}
    return (
        [s for s in train if s.sample_id not in val_ids],
        [s for s in train if s.sample_id in val_ids],
    )
