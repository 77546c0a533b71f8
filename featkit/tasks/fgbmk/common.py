"""What both FG-BMK tasks share: loading the block features, checking settings, the record.

FG-BMK trains on its ``train.csv`` (featkit's train + val, as FG-BMK has no validation split) and
tests on ``test.csv``. Its heads read the class token of the last one or two blocks and the last
block's patch-token mean; here those are cached feature kinds: the source's kind is the last
block's class token, ``earlier_blocks`` the blocks before it (earliest first) and ``patch_kind``
the patch mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.loading import FeatureSource, check_same_classes
from featkit.tasks.settings import check_device, check_grid

TRAIN_SPLITS = ("train", "val")
TEST_SPLIT = "test"
#: Where the transcribed code lives.
SOURCE = "SEU-VIPGroup/FG-BMK@7765a10 demo/machine_evaluation"
#: FG-BMK's full grid: 1-2 blocks x with/without the patch mean x 6 learning rates.
FULL_GRID = 24


@dataclass
class Blocks:
    """One dataset's block features for FG-BMK's train (train + val) and test splits."""

    dataset: str
    model: str
    train: list[np.ndarray]
    test: list[np.ndarray]
    train_patch: np.ndarray | None
    test_patch: np.ndarray | None
    train_labels: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    meta: dict[str, Any]
    kinds: dict[str, Any]
    notes: list[str]
    #: each row's label set for multi-label data (a manifest's space-separated labels)
    train_sets: list[tuple[int, ...]] | None = None
    test_sets: list[tuple[int, ...]] | None = None


def check_common(task: str, *, iterations: int, batch_size: int, world_size: int, seed: int,
                 learning_rates: Sequence[float], optimizer: str, device: str | None) -> None:
    """One-line errors for the settings both FG-BMK tasks take."""
    check_device(task, device)
    check_grid(task, "learning_rates", learning_rates)
    for name, value in (("iterations", iterations), ("batch_size", batch_size),
                        ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FeatkitError(f"{task}: {name} must be a positive integer, got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise FeatkitError(f"{task}: seed must be a non-negative integer, got {seed!r}")
    if optimizer not in ("adam", "sgd"):
        raise FeatkitError(f"{task}: optimizer must be adam or sgd, got {optimizer!r}")


def load_blocks(source: FeatureSource, dataset: str, earlier_blocks: Sequence[str],
                patch_kind: str | None) -> Blocks:
    """The cached kinds of FG-BMK's splits, checked to list the same images in each kind."""
    kinds = [*earlier_blocks, source.features]
    names = kinds + ([patch_kind] if patch_kind else [])
    if len(set(names)) != len(names):
        raise FeatkitError(f"FG-BMK features name a kind twice: {', '.join(names)}")
    sets = {kind: {split: replace(source, features=kind).load(dataset, split)
                   for split in (*TRAIN_SPLITS, TEST_SPLIT)} for kind in names}
    last = sets[source.features]
    class_names = check_same_classes(last, dataset)
    for kind in names:
        for split, fs in sets[kind].items():
            if list(fs.sample_ids) != list(last[split].sample_ids):
                raise FeatkitError(f"{dataset}/{split}: the cached '{kind}' and "
                                   f"'{source.features}' features list different images; "
                                   f"extract both in one run ({fs.path})")

    def train_of(kind: str) -> np.ndarray:
        return np.concatenate([sets[kind][s].features for s in TRAIN_SPLITS])

    first = last[TEST_SPLIT]
    notes = [n for kind in names for fs in sets[kind].values() for n in fs.notes]
    multi = multi_label_sets(dataset, source.data_root or first.meta.get("data_root"))
    train_ids = [i for s in TRAIN_SPLITS for i in last[s].sample_ids]
    train_labels = np.concatenate([last[s].labels for s in TRAIN_SPLITS])
    return Blocks(
        dataset=dataset, model=first.model or source.model,
        train=[train_of(k) for k in kinds], test=[sets[k][TEST_SPLIT].features for k in kinds],
        train_patch=train_of(patch_kind) if patch_kind else None,
        test_patch=sets[patch_kind][TEST_SPLIT].features if patch_kind else None,
        train_labels=train_labels, test_labels=first.labels, class_names=tuple(class_names),
        meta=dict(first.meta),
        kinds={"last_block": source.features, "earlier_blocks": list(earlier_blocks),
               "patch_mean": patch_kind},
        notes=list(dict.fromkeys(notes)),
        train_sets=rows_sets(multi, train_ids, train_labels),
        test_sets=rows_sets(multi, first.sample_ids, first.labels),
    )


def multi_label_sets(dataset: str, root: str | None) -> dict[str, tuple[int, ...]] | None:
    """Sample id -> label set of the dataset's multi-label rows (a manifest's space-separated
    labels, which the cache holds as their first label); None for single-label data.
    ``root``: the dataset root the cache names."""
    from featkit.datasets import open_dataset
    from featkit.datasets.generic import ManifestSamples

    if not root:
        return None
    reader = open_dataset(dataset, root)
    sets: dict[str, tuple[int, ...]] = {}
    for split in reader.splits:
        samples = reader.samples(split)
        if isinstance(samples, ManifestSamples):
            sets.update(samples.multi_labels())
    return sets or None


def rows_sets(sets: dict[str, tuple[int, ...]] | None, sample_ids: Sequence[str],
              labels: np.ndarray) -> list[tuple[int, ...]] | None:
    """Each cached row's label set (its label alone where the reader lists no set)."""
    if sets is None:
        return None
    return [sets.get(sid, (int(y),)) for sid, y in zip(sample_ids, labels.tolist())]


def grid_warnings(result, blocks: Blocks) -> list[str]:
    """What a reader of an FG-BMK record must know beyond its departures."""
    warnings = list(blocks.notes)
    n = result.counts["heads"]
    if n < FULL_GRID:
        missing = []
        if not blocks.kinds["earlier_blocks"]:
            missing.append("no earlier block's class token (earlier_blocks)")
        if not blocks.kinds["patch_mean"]:
            missing.append("no patch-token mean (patch_kind)")
        why = "; ".join(missing) or "a shorter learning-rate list"
        warnings.append(f"FG-BMK's grid has {FULL_GRID} heads; this one has {n} ({why})")
    if result.selected is None:
        warnings.append("no head scored above 0 on test; FG-BMK then reports 0")
    return warnings


def record_of(task: str, result, blocks: Blocks, settings: dict[str, Any],
              compare_with: dict[str, Any]) -> dict[str, Any]:
    """The result record of an FG-BMK task: metrics of the head chosen on test, every head's
    scores, the departures from the standard protocol and the corrected task to compare with."""
    from featkit.results import make_result
    from probes.fgbmk import iter_heads

    return make_result(
        task, model=blocks.model, dataset=blocks.dataset, features=blocks.kinds["last_block"],
        metrics=result.metrics,
        settings={"protocol": "fgbmk", **result.settings, **settings, "features": blocks.kinds,
                  "train_splits": "+".join(TRAIN_SPLITS), "test_split": TEST_SPLIT,
                  "source": SOURCE},
        provenance=blocks.meta,
        extra={"heads": list(iter_heads(result)), "selected_head": result.selected,
               "counts": result.counts, "departures": list(result.departures),
               "compare_with": compare_with},
        warnings=grid_warnings(result, blocks),
    )


def parse_pairs(pairs: Sequence[str], option: str = "--fgbmk") -> dict[str, Any]:
    """``["iterations=2000", "learning_rates=1e-3,5e-3"]`` -> settings values: numbers,
    booleans and ``none`` as such, comma-separated values as tuples, the rest as text."""
    values: dict[str, Any] = {}
    for item in pairs:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FeatkitError(f"{option} {item!r}: expected KEY=VALUE, e.g. iterations=2000")
        parts = [_scalar(p.strip()) for p in text.split(",")] if "," in text else None
        values[key.strip()] = tuple(p for p in parts if p != "") if parts else _scalar(
            text.strip())
    return values


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def summary_table(record: dict[str, Any]) -> str:
    """The readable summary of an FG-BMK record: the grid, the head FG-BMK reports, its
    metrics, and how the protocol departs from the standard one."""
    from featkit.results import format_table, metrics_table

    s = record["settings"]
    lines = [f"{record['model']} on {record['dataset']} ({record['features']}), "
             f"{record['task']}: FG-BMK's protocol, {s['iterations']} iterations of batch "
             f"{s['batch_size']} ({s['optimizer']}), {record['counts']['heads']} heads"]
    metric_names = [k for k in record["heads"][0] if k not in (
        "name", "n_blocks", "avgpool", "lr", "scaled_lr", "selected")] if record["heads"] else []
    rows = [{"head": h["name"], **{m: h[m] for m in metric_names},
             "": "<- reported" if h["selected"] else ""} for h in record["heads"]]
    lines.append(format_table(rows))
    lines.append(metrics_table(record))
    lines.append("departures from the standard protocol:")
    lines += [f"- {d}" for d in record["departures"]]
    return "\n".join(lines)
