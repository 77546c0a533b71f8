"""Zero-shot task: cached image features against cached class embeddings (CLIP protocol).

Each class is embedded as the normalised mean of its normalised prompt embeddings
(:mod:`featkit.text_cache`, from :mod:`featkit.classnames`' names and templates), by the text side
of the model whose image features are scored, with the same weights. An image is assigned the
class of highest cosine similarity. With a label map, a merged class scores as its best member;
with ``merge``, all datasets' classes compete and each dataset's top-1 is reported next to its
own zero-shot top-1. The record's provenance carries the templates and the class names used.

Every record stores the per-image 0/1 scores of ``top1`` and ``top5`` (``per_item``, see
:mod:`featkit.tasks.intervals`); with ``ci`` it also gets their bootstrap intervals over the
scored images (a merged run's resampled within each dataset). ``mean_per_class`` is a mean over
classes, not over images, and gets no interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores, merged_items
from featkit.tasks.loading import (
    FeatureSource,
    Splits,
    label_map_extra,
    label_space_record,
    load_datasets,
    merge_splits,
    provenance,
    read_label_map,
)
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import ClassifierSettings, check_choice, check_device

if TYPE_CHECKING:
    from extractors.text_towers import TextTower
    from featkit.classnames import ClassNames
    from featkit.text_cache import ClassEmbeddings, TextSource

INFO = register(TaskInfo(
    name="zeroshot", title="zero-shot", headline=("top1",),
    columns=("top1", "top5", "mean_per_class"), module=__name__, shift_priority=2,
))
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Settings(ClassifierSettings):
    """``templates``: a built-in template set, ``"dataset"`` (the dataset's own CLIP-style
    set) or a file; ``class_names``: a built-in class-name list or a file (one dataset only;
    default: the dataset's own list); ``split``: the images scored; ``precision``: the text
    tower's on GPU; ``ci``: bootstrap intervals of top-1 and top-5 over the images."""

    templates: str = "simple"
    class_names: str | None = None
    split: str = "test"
    precision: str = "fp32"
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        check_choice(INFO.name, "--precision", self.precision, PRECISIONS)
        if not self.split:
            raise FeatkitError("zeroshot: --split names no split")


@dataclass
class DatasetText:
    """One dataset's side of the comparison: clean names, class embeddings and, after a label
    map, the old-class -> new-class groups."""

    names: ClassNames
    text: ClassEmbeddings
    groups: np.ndarray | None
    warnings: list[str]


def text_source(source: FeatureSource, s: Splits, settings: Settings) -> TextSource:
    """The text side matching these image features (same model, weights and adapter)."""
    from featkit.text_cache import TextSource

    return TextSource(source.model, weights=source.weights, adapter=source.adapter,
                      cache_dir=source.cache_dir, device=settings.device,
                      precision=settings.precision, weights_identity=s.meta.get("weights"))


def dataset_text(source: FeatureSource, s: Splits, settings: Settings,
                 tower: Callable[[], TextTower], *, progress: bool = False) -> DatasetText:
    """Clean names, templates and class embeddings of one loaded dataset."""
    from featkit.classnames import builtin_class_lists, resolve_class_names, resolve_templates
    from featkit.text_cache import class_embeddings

    raw = list(s.files[settings.split].class_names)  # before any label map
    names = resolve_class_names(s.dataset, raw, settings.class_names)
    # 'dataset' templates follow a built-in list named by --classnames (imagenet in a folder)
    own = settings.class_names if settings.class_names in builtin_class_lists() else s.dataset
    templates = resolve_templates(settings.templates, own)
    text = class_embeddings(text_source(source, s, settings), s.dataset, names.names, templates,
                            tower=tower, progress=progress)
    width = s.features[settings.split].shape[1]
    if text.embeddings.shape[1] != width:
        raise FeatkitError(
            f"{s.model} '{s.kind}' image features are {width}-d but its text embeddings are "
            f"{text.embeddings.shape[1]}-d: zero-shot compares the features the text side is "
            f"aligned with (--features {text.meta.get('image_kind', 'aligned')})")
    groups = None
    if settings.label_map is not None:
        from probes.labels import build_label_map

        mapping = build_label_map(raw, read_label_map(settings.label_map), settings.label_map)
        groups = mapping.old_to_new
    return DatasetText(names, text, groups, _name_warnings(s.dataset, names) + text.notes)


def _name_warnings(dataset: str, names: ClassNames) -> list[str]:
    if names.matched_by == "cleaned":
        return [f"{dataset}: no built-in class-name list; its own class names were cleaned "
                f"(underscores as spaces); pass --classnames FILE for better prompts"]
    if names.matched_by == "position" and names.verified != len(names.names):
        return [f"{dataset}: class names matched by position ({names.verified} of "
                f"{len(names.names)} also match by name); check --classnames if the order differs"]
    return []


def _record_settings(settings: Settings) -> dict[str, Any]:
    """The record's settings as asked for (the resolved templates and names are in its
    provenance under ``text`` and ``class_names``)."""
    return {"split": settings.split, "templates": settings.templates,
            "class_names": settings.class_names, "precision": settings.precision,
            "metric": "cosine", **settings.label_space_fields()}


def run(source: FeatureSource, datasets: Sequence[str], settings: Settings | None = None, *,
        progress: bool = True) -> list[dict[str, Any]]:
    """Zero-shot records (task ``"zeroshot"``): one per dataset, or one merged record."""
    from featkit.text_cache import lazy_tower

    settings = settings or Settings()
    datasets = list(datasets)
    if settings.class_names is not None and len(datasets) > 1:
        raise FeatkitError("--classnames names the classes of one dataset; run it with a single "
                           "--dataset")
    loaded = load_datasets(source, datasets, (settings.split,), merge=settings.merge,
                           label_map=settings.label_map)
    tower = lazy_tower(text_source(source, loaded[0], settings))
    texts = [dataset_text(source, s, settings, tower, progress=progress) for s in loaded]
    if settings.merge:
        return [_merged(loaded, texts, settings)]
    return [_single(s, text, settings) for s, text in zip(loaded, texts)]


def _single(s: Splits, side: DatasetText, settings: Settings) -> dict[str, Any]:
    from featkit.results import make_result
    from probes.zeroshot import zeroshot_classify_ranks

    split = settings.split
    result, ranks = zeroshot_classify_ranks(s.features[split], s.labels[split],
                                            side.text.embeddings, s.class_names,
                                            groups=side.groups, device=settings.device)
    extra = {"per_class": result.per_class,
             "counts": {split: result.n_samples, "classes": len(s.class_names)},
             **label_map_extra(settings.label_map, s)}
    ids = s.files[split].sample_ids
    items = {metric: ItemScores.of(hits, ids, unit=f"{split} items")
             for metric, hits in _hits(ranks, len(s.class_names)).items()}
    attach_item_scores(extra, items, settings.ci, result.metrics())
    return make_result(
        INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=result.metrics(),
        settings=_record_settings(settings),
        provenance={**provenance([s]), "text": side.text.provenance(),
                    "class_names": side.names.provenance()},
        extra=extra, warnings=side.warnings,
    )


def _merged(loaded: Sequence[Splits], texts: Sequence[DatasetText], settings: Settings
            ) -> dict[str, Any]:
    from featkit.results import make_result
    from probes.labels import merged_vs_single
    from probes.zeroshot import metrics_from_ranks, zeroshot_ranks

    split = settings.split
    single = {}
    for s, side in zip(loaded, texts):
        ranks = zeroshot_ranks(s.features[split], s.labels[split], side.text.embeddings,
                               device=settings.device)
        single[s.dataset] = metrics_from_ranks(ranks, s.labels[split], s.class_names).top1
    merged = merge_splits(loaded, (split,))
    classes = np.concatenate([side.text.embeddings for side in texts])
    labels = merged.labels[split]
    ranks = zeroshot_ranks(merged.features[split], labels, classes, device=settings.device)
    names = merged.space.class_names
    result = metrics_from_ranks(ranks, labels, names)
    owner = merged.owner[split]
    per_source = {s.dataset: metrics_from_ranks(ranks[owner == i], labels[owner == i], names).top1
                  for i, s in enumerate(loaded)}
    per_dataset, mean_drop = merged_vs_single(single, per_source)
    prov = provenance(loaded)
    prov["text"] = {s.dataset: side.text.provenance() for s, side in zip(loaded, texts)}
    prov["class_names"] = {s.dataset: side.names.provenance() for s, side in zip(loaded, texts)}
    extra = {"per_dataset": per_dataset, "mean_drop": mean_drop,
             "label_space": label_space_record(merged.space), "per_class": result.per_class,
             "counts": {split: result.n_samples, "classes": len(names)}}
    parts = [(s.dataset, s.files[split].sample_ids) for s in loaded]
    items = {metric: merged_items(hits, parts, unit=f"{split} items")
             for metric, hits in _hits(ranks, len(names)).items()}
    attach_item_scores(extra, items, settings.ci, result.metrics())
    return make_result(
        INFO.name, model=loaded[0].model, dataset=",".join(s.dataset for s in loaded),
        features=loaded[0].kind, metrics=result.metrics(),
        settings=_record_settings(settings), provenance=prov, extra=extra,
        warnings=[w for side in texts for w in side.warnings],
    )


def _hits(ranks: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """The per-image 0/1 scores whose means are the record's ``top1`` and ``top5``."""
    from probes.zeroshot import TOP_K, top_k_hits

    return {"top1": top_k_hits(ranks, n_classes, 1), "top5": top_k_hits(ranks, n_classes, TOP_K)}
