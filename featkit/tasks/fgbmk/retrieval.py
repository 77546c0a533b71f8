"""FG-BMK's retrieval (``fgbmk_retrieval``): a triplet-trained projection head, its class-rank
"mAP" against a random train gallery, the best head on test.

Compare with ``retrieval`` (exact full-ranking mAP of the features): ``featkit report`` prints the
two side by side. The record's ``departures`` say what FG-BMK's "mAP" and "recall@k" really are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks.fgbmk.common import check_common, load_blocks, record_of
from featkit.tasks.loading import FeatureSource
from featkit.tasks.registry import TaskInfo, register
from probes.fgbmk import (
    BATCH_SIZE,
    EMBED_DIM,
    GALLERY_SIZE,
    ITERATIONS,
    LEARNING_RATES,
    NEIGHBOURS,
    RETRIEVAL_OPTIMIZER,
)

INFO = register(TaskInfo(
    name="fgbmk_retrieval", title="retrieval (FG-BMK protocol)", headline=("mAP",),
    columns=("mAP", "recall@1", "recall@10"), module=__name__,
))
#: The corrected task and metric each FG-BMK metric is shown next to.
COMPARE_WITH = {"task": "retrieval", "metrics": {"mAP": "mAP", "recall@1": "R@1"}}


@dataclass(frozen=True)
class Settings:
    """FG-BMK's ``eval_retrieval.py`` defaults; ``earlier_blocks``, ``patch_kind``,
    ``world_size`` and ``device`` as in :class:`featkit.tasks.fgbmk.linear.Settings`."""

    earlier_blocks: tuple[str, ...] = ()
    patch_kind: str | None = None
    learning_rates: tuple[float, ...] = LEARNING_RATES
    iterations: int = ITERATIONS
    batch_size: int = BATCH_SIZE
    world_size: int = 1
    optimizer: str = RETRIEVAL_OPTIMIZER
    embed_dim: int = EMBED_DIM
    gallery_size: int = GALLERY_SIZE
    neighbours: int = NEIGHBOURS
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        check_common(INFO.name, iterations=self.iterations, batch_size=self.batch_size,
                     world_size=self.world_size, seed=self.seed,
                     learning_rates=self.learning_rates, optimizer=self.optimizer,
                     device=self.device)
        for name, value in (("embed_dim", self.embed_dim), ("gallery_size", self.gallery_size),
                            ("neighbours", self.neighbours)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FeatkitError(f"{INFO.name}: {name} must be a positive integer, "
                                   f"got {value!r}")


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        progress: bool = True) -> dict[str, Any]:
    """Train FG-BMK's projection heads on train + val, score each on the test queries against
    the random train gallery, and build the record (task ``fgbmk_retrieval``)."""
    from probes.fgbmk import LabelSets, fgbmk_retrieval

    settings = settings or Settings()
    blocks = load_blocks(source, dataset, settings.earlier_blocks, settings.patch_kind)
    classes = len(blocks.class_names)
    result = fgbmk_retrieval(
        blocks.train, LabelSets.from_labels(blocks.train_sets or blocks.train_labels, classes),
        blocks.test, LabelSets.from_labels(blocks.test_sets or blocks.test_labels, classes),
        train_patch_mean=blocks.train_patch, test_patch_mean=blocks.test_patch,
        learning_rates=settings.learning_rates, iterations=settings.iterations,
        batch_size=settings.batch_size, world_size=settings.world_size,
        embed_dim=settings.embed_dim, gallery_size=settings.gallery_size,
        neighbours=settings.neighbours, optimizer=settings.optimizer, seed=settings.seed,
        device=settings.device, progress=progress)
    return record_of(INFO.name, result, blocks, {"device": settings.device or "auto"},
                     COMPARE_WITH)
