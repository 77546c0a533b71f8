"""FG-BMK's sampling: batch streams, triplets of its retrieval head, the random gallery.

Labels are :class:`LabelSets` (CSR arrays), so multi-label rows (SkinCon, Wine) and 10,000-class
label spaces (iNat2021) cost no dense matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError

GALLERY_SIZE = 20000

def draw_batches(n: int, batch_size: int, iterations: int, seed: int = 0) -> np.ndarray:
    """``iterations x batch_size`` row indices: consecutive slices of a stream of seeded random
    permutations of ``range(n)`` (an infinite shuffled sampler; no batch is ever short)."""
    import torch

    if n < 1:
        raise FeatkitError("FG-BMK training needs at least one training row")
    generator = torch.Generator().manual_seed(int(seed))
    need = iterations * batch_size
    parts, have = [], 0
    while have < need:
        parts.append(torch.randperm(n, generator=generator).numpy())
        have += n
    stream = np.concatenate(parts)[:need] if parts else np.zeros(0, np.int64)
    return stream.reshape(iterations, batch_size).astype(np.int64)


@dataclass(frozen=True)
class LabelSets:
    """Each row's labels as CSR arrays (``indices[indptr[i]:indptr[i + 1]]``), so multi-label
    rows and 10,000-class label spaces cost no dense matrix."""

    indptr: np.ndarray
    indices: np.ndarray
    num_classes: int

    @classmethod
    def from_labels(cls, labels: np.ndarray | Sequence[Sequence[int]],
                    num_classes: int | None = None) -> LabelSets:
        """From integer labels (one per row) or a sequence of label lists."""
        if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
            indices = labels.astype(np.int64)
            indptr = np.arange(len(indices) + 1, dtype=np.int64)
        else:
            lists = [np.asarray(row, dtype=np.int64).reshape(-1) for row in labels]
            indptr = np.zeros(len(lists) + 1, dtype=np.int64)
            indptr[1:] = np.cumsum([len(row) for row in lists])
            indices = np.concatenate(lists) if lists else np.zeros(0, np.int64)
        top = int(indices.max()) + 1 if indices.size else 0
        return cls(indptr, indices, max(top, num_classes or 0))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    @property
    def single_label(self) -> bool:
        return bool(np.all(np.diff(self.indptr) == 1))

    def _entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``indices`` of the listed rows' labels, each entry's row number)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, counts = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        owner = np.repeat(np.arange(len(rows)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(starts, counts) + np.arange(int(counts.sum())) - first, owner

    def rows(self, subset: np.ndarray, keep: np.ndarray | None = None) -> LabelSets:
        """The rows ``subset`` (in that order), keeping only the labels where ``keep[label]``."""
        positions, owner = self._entries(subset)
        indices = self.indices[positions]
        if keep is not None:
            mask = keep[indices]
            indices, owner = indices[mask], owner[mask]
        indptr = np.zeros(len(subset) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(owner, minlength=len(subset)))
        return LabelSets(indptr, indices, self.num_classes)

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """A ``len(rows) x num_classes`` 0/1 float32 matrix of those rows."""
        positions, owner = self._entries(rows)
        out = np.zeros((len(rows), self.num_classes), dtype=np.float32)
        out[owner, self.indices[positions]] = 1.0
        return out


def known_rows(labels: LabelSets) -> tuple[np.ndarray, LabelSets]:
    """FG-BMK's retrieval training set: the rows with an even-numbered label, each keeping its
    even labels only (``TripletDataset(has_known=True, has_unknown=False)``)."""
    keep = np.arange(labels.num_classes) % 2 == 0
    owner = np.repeat(np.arange(len(labels)), np.diff(labels.indptr))
    rows = np.flatnonzero(np.bincount(owner[keep[labels.indices]], minlength=len(labels)))
    return rows, labels.rows(rows, keep)


def draw_triplets(labels: LabelSets, batch_size: int, iterations: int, seed: int = 0
                  ) -> np.ndarray:
    """``iterations x 3 x batch_size`` (anchor, positive, negative) row indices into ``labels``.

    Anchors come from :func:`draw_batches`; a positive is drawn uniformly from the rows that
    share one of the anchor's labels (the anchor itself excluded unless it is alone); a
    negative is drawn uniformly from all rows (FG-BMK's class check never rejects one)."""
    anchors = draw_batches(len(labels), batch_size, iterations, seed)
    rng = np.random.default_rng(int(seed))
    flat = anchors.reshape(-1)
    positives = np.empty_like(flat)
    if labels.single_label:
        label = labels.indices
        order = np.argsort(label, kind="stable")
        start = np.searchsorted(label[order], np.arange(labels.num_classes))
        count = np.bincount(label, minlength=labels.num_classes)
        position = np.empty(len(label), dtype=np.int64)
        position[order] = np.arange(len(label)) - start[label[order]]
        c = label[flat]
        k = count[c]
        draw = (rng.random(len(flat)) * np.maximum(k - 1, 1)).astype(np.int64)
        draw = np.where(k > 1, draw + (draw >= position[flat]), 0)
        positives[:] = order[start[c] + draw]
    else:
        members = _class_members(labels)
        cache: dict[int, np.ndarray] = {}
        for j, a in enumerate(flat):
            pool = cache.get(int(a))
            if pool is None:
                pool = np.unique(np.concatenate([members[c] for c in labels.row(int(a))]))
                if len(pool) > 1:
                    pool = pool[pool != a]
                cache[int(a)] = pool
            positives[j] = pool[int(rng.random() * len(pool))]
    negatives = rng.integers(0, len(labels), size=len(flat))
    return np.stack([anchors, positives.reshape(anchors.shape),
                     negatives.reshape(anchors.shape)], axis=1)


def _class_members(labels: LabelSets) -> list[np.ndarray]:
    rows = np.repeat(np.arange(len(labels)), np.diff(labels.indptr))
    order = np.argsort(labels.indices, kind="stable")
    bounds = np.searchsorted(labels.indices[order], np.arange(labels.num_classes + 1))
    return [rows[order[bounds[c]:bounds[c + 1]]] for c in range(labels.num_classes)]


def gallery_rows(n: int, size: int = GALLERY_SIZE, seed: int = 0) -> np.ndarray:
    """The retrieval gallery: the first ``size`` rows of a seeded ``torch.randperm(n)`` (what a
    shuffled ``DistributedSampler`` gives one process), all rows when fewer."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return perm[:size].astype(np.int64)
