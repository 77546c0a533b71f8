"""FG-BMK's linear probe (``fgbmk_linear``): its head grid trained with Adam, the best head on test.

Compare with ``linear_probe`` (C chosen on val, test scored once): ``featkit report`` prints the
two side by side. The record's ``departures`` list how this protocol differs from that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks.fgbmk.common import check_common, load_blocks, record_of
from featkit.tasks.loading import FeatureSource
from featkit.tasks.registry import TaskInfo, register
from probes.fgbmk import BATCH_SIZE, ITERATIONS, LEARNING_RATES, LINEAR_OPTIMIZER

INFO = register(TaskInfo(
    name="fgbmk_linear", title="linear probe (FG-BMK protocol)", headline=("top1",),
    columns=("top1", "top5"), module=__name__,
))
#: The corrected task and metric each FG-BMK metric is shown next to.
COMPARE_WITH = {"task": "linear_probe", "metrics": {"top1": "top1", "top5": "top5"}}


@dataclass(frozen=True)
class Settings:
    """FG-BMK's ``eval_linear.py`` defaults. ``earlier_blocks``: cached kinds holding the class
    token of the blocks before the last (earliest first; FG-BMK uses one); ``patch_kind``: the
    kind holding the last block's patch-token mean (e.g. ``patch_mean``). ``world_size``: the
    GPUs FG-BMK's learning-rate scaling assumes. ``device`` None: CUDA when present."""

    earlier_blocks: tuple[str, ...] = ()
    patch_kind: str | None = None
    learning_rates: tuple[float, ...] = LEARNING_RATES
    iterations: int = ITERATIONS
    batch_size: int = BATCH_SIZE
    world_size: int = 1
    optimizer: str = LINEAR_OPTIMIZER
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        check_common(INFO.name, iterations=self.iterations, batch_size=self.batch_size,
                     world_size=self.world_size, seed=self.seed,
                     learning_rates=self.learning_rates, optimizer=self.optimizer,
                     device=self.device)


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        progress: bool = True) -> dict[str, Any]:
    """Train FG-BMK's linear heads on train + val, score each on test, and build the record
    (task ``fgbmk_linear``) of the head FG-BMK would report."""
    from probes.fgbmk import fgbmk_linear

    settings = settings or Settings()
    blocks = load_blocks(source, dataset, settings.earlier_blocks, settings.patch_kind)
    if blocks.train_sets is not None:
        raise FeatkitError(f"{dataset} lists several labels per image; FG-BMK's linear "
                           "evaluation reads one integer label per image (its Dataset class), "
                           "so it has no FG-BMK linear score (see the multilabel_probe task)")
    result = fgbmk_linear(
        blocks.train, blocks.train_labels, blocks.test, blocks.test_labels,
        train_patch_mean=blocks.train_patch, test_patch_mean=blocks.test_patch,
        num_classes=len(blocks.class_names), learning_rates=settings.learning_rates,
        iterations=settings.iterations, batch_size=settings.batch_size,
        world_size=settings.world_size, optimizer=settings.optimizer, seed=settings.seed,
        device=settings.device, progress=progress)
    return record_of(INFO.name, result, blocks, {"device": settings.device or "auto"},
                     COMPARE_WITH)
