"""FG-BMK's machine-oriented protocol as its released code computes it, on feature arrays.

:mod:`probes.fgbmk.protocol` holds the two evaluations (:func:`fgbmk_linear`,
:func:`fgbmk_retrieval`), their head grid and training, and the departures a record states;
:mod:`probes.fgbmk.sampling` the batch streams, triplets and gallery. Every public name is
re-exported here.
"""

from __future__ import annotations

from probes.fgbmk.protocol import (
    BATCH_SIZE,
    EMBED_DIM,
    ITERATIONS,
    LEARNING_RATES,
    LINEAR_DEPARTURES,
    LINEAR_OPTIMIZER,
    NEIGHBOURS,
    RETRIEVAL_DEPARTURES,
    RETRIEVAL_OPTIMIZER,
    FgbmkResult,
    HeadConfig,
    HeadScore,
    class_probabilities,
    fgbmk_linear,
    fgbmk_retrieval,
    head_grid,
    iter_heads,
    linear_input,
    macro_recall,
    pairwise_similarity,
    rank_metrics,
    scale_lr,
    select_on_test,
    train_heads,
)
from probes.fgbmk.sampling import (
    GALLERY_SIZE,
    LabelSets,
    draw_batches,
    draw_triplets,
    gallery_rows,
    known_rows,
)

__all__ = [
    "BATCH_SIZE", "EMBED_DIM", "GALLERY_SIZE", "ITERATIONS", "LEARNING_RATES",
    "LINEAR_DEPARTURES", "LINEAR_OPTIMIZER", "NEIGHBOURS", "RETRIEVAL_DEPARTURES",
    "RETRIEVAL_OPTIMIZER", "FgbmkResult", "HeadConfig", "HeadScore", "LabelSets",
    "class_probabilities", "draw_batches", "draw_triplets", "fgbmk_linear", "fgbmk_retrieval",
    "gallery_rows", "head_grid", "iter_heads", "known_rows", "linear_input", "macro_recall",
    "pairwise_similarity", "rank_metrics", "scale_lr", "select_on_test", "train_heads",
]
