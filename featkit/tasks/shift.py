"""Distribution-shift task: one classifier on the reference distribution, scored on shifted sets.

The classifier is fitted once on the reference (ImageNet): a linear probe (the linear task's
protocol, or a saved probe), the weighted kNN over the reference's train + val, or zero-shot
class embeddings of prompts. Each shifted set is then scored with its scores masked to the
reference classes it covers, and the reference test split (ImageNet's official val) restricted
to the same classes gives the reference accuracy of the pair, as imagenet-testbed does
(:mod:`probes.shift`). One record per shifted set, with ``top1`` (shifted), ``reference_top1``
and ``drop``, which ``featkit report --shift imagenet:imagenet-r`` reads as one point.

Linear and zero-shot scores of the reference are computed once over all its classes and sliced
per set; a shifted set's scores are computed only for the columns it needs (200 of ImageNet's
1,000 classes for ImageNet-R). kNN's bank is restricted to the covered classes, so its votes go
to those classes only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks import knn, linear
from featkit.tasks.intervals import Interval, ItemScores, interval_record, per_item_record
from featkit.tasks.loading import FeatureSource, check_same_classes
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice, check_device

if TYPE_CHECKING:
    from featkit.featureset import FeatureSet
    from probes.linear import LinearProbe
    from probes.shift import ClassSubset, MaskedAccuracy

INFO = register(TaskInfo(
    name="shift", title="distribution shift", headline=("top1",),
    columns=("top1", "reference_top1", "drop"), module=__name__,
))
CLASSIFIERS = ("linear", "knn", "zeroshot")
#: The shifted sets ``featkit shift`` evaluates when not told (seed 001).
DEFAULT_SHIFTS = ("imagenetv2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
DEFAULT_TEMPLATES = ("a photo of a {}.",)
PROTOCOL = ("scores restricted to the reference classes the shifted set covers; shifted items "
            "correct when the best of those classes is one their class stands for; reference "
            "accuracy over the reference test items of those classes, correct when the best of "
            "those classes is their own (imagenet-testbed)")


@dataclass(frozen=True)
class Settings:
    """``classifier``: ``linear`` (``linear_settings``, or the saved ``probe``), ``knn``
    (``knn_settings``; the bank is the reference's train + val unless ``train_only``) or
    ``zeroshot`` (the mean embedding of ``templates`` filled with each class's readable name,
    by the model's text side). ``data_roots``: where to read a shifted set's class mapping
    (ObjectNet's ``mappings/``) when not where its features were extracted from."""

    classifier: str = "linear"
    reference: str = "imagenet"
    reference_split: str = "test"
    split: str = "test"
    probe: str | None = None
    linear_settings: linear.Settings = field(default_factory=linear.Settings)
    knn_settings: knn.Settings = field(default_factory=knn.Settings)
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    device: str | None = None
    data_roots: tuple[tuple[str, str], ...] = ()
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_choice(INFO.name, "--classifier", self.classifier, CLASSIFIERS)
        check_device(INFO.name, self.device)
        if self.probe is not None and self.classifier != "linear":
            raise FeatkitError(f"{INFO.name}: --probe is a saved linear probe; it needs "
                               f"--classifier linear, not {self.classifier}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise FeatkitError(f"{INFO.name}: every --templates entry needs a {{}} for the class "
                               f"name, got {list(self.templates)}")


@dataclass
class Outcome:
    """The records (one per shifted set) and the linear probe used, when there was one."""

    records: list[dict[str, Any]]
    probe: LinearProbe | None = None


# --------------------------------------------------------------------------- classifiers


class Scorer:
    """Scores of features over a subset of the reference classes (columns); ``known``: the
    reference class ids it can score (those with training data, or all)."""

    name = ""
    warnings: tuple[str, ...] = ()
    known: np.ndarray

    def scores(self, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError


class LinearScorer(Scorer):
    """A linear probe whose class ``rows[c]`` is reference class ``c`` (-1: not learnt)."""

    name = "linear"

    def __init__(self, probe: LinearProbe, rows: np.ndarray, info: dict[str, Any],
                 warnings=()) -> None:
        self.probe, self.rows, self.info, self.warnings = probe, rows, info, tuple(warnings)
        self.known = np.flatnonzero(rows >= 0)

    def scores(self, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
        probe, rows = self.probe, self.rows[columns]
        if not np.array_equal(rows, np.arange(probe.num_classes)):
            probe = replace(probe, weight=np.ascontiguousarray(probe.weight[rows]),
                            bias=np.ascontiguousarray(probe.bias[rows]),
                            class_names=tuple(probe.class_names[r] for r in rows))
        return probe.predict_scores(features)

    def settings(self) -> dict[str, Any]:
        return {"probe": self.info}


class ZeroShotScorer(Scorer):
    name = "zeroshot"

    def __init__(self, embeddings: np.ndarray, templates: Sequence[str]) -> None:
        self.embeddings, self.templates = embeddings, list(templates)
        self.known = np.arange(embeddings.shape[0])

    def scores(self, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x @ self.embeddings[columns].T

    def settings(self) -> dict[str, Any]:
        return {"templates": self.templates, "similarity": "cosine",
                "class_text": "readable class names (CLIP's for ImageNet wnids)"}


class KnnScorer(Scorer):
    name = "knn"

    def __init__(self, bank_x: np.ndarray, bank_y: np.ndarray, settings: knn.Settings,
                 device: str | None) -> None:
        self.bank_x, self.bank_y, self.options, self.device = bank_x, bank_y, settings, device
        ks = sorted(settings.ks)
        self.k = settings.primary_k or (20 if 20 in ks else ks[-1])
        self.known = np.unique(bank_y)

    def scores(self, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
        from probes.knn import knn_scores

        keep = np.isin(self.bank_y, columns)
        remap = np.searchsorted(columns, self.bank_y[keep])
        k = min(self.k, int(keep.sum()))
        votes = knn_scores(self.bank_x[keep], remap, features, [k], len(columns),
                           temperature=self.options.temperature, device=self.device)
        return votes[k]

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.options.temperature,
                "bank": "+".join(self.options.bank_splits), "bank_size": int(len(self.bank_y)),
                "bank_rule": "the bank's items of the classes the set covers"}


def _saved_probe(path: str, reference: FeatureSet) -> LinearScorer:
    from probes.linear import LinearProbe

    probe = LinearProbe.load(path)
    index = {name: i for i, name in enumerate(reference.class_names)}
    unknown = [c for c in probe.class_names if c not in index]
    if probe.dim != reference.features.shape[1] or unknown:
        raise FeatkitError(f"probe {path} takes {probe.dim}-d features over "
                           f"{probe.num_classes} classes; {reference.path} holds "
                           f"{reference.features.shape[1]}-d '{reference.kind}' features over "
                           f"{len(index)} other classes: pass the probe trained on these features")
    rows = np.full(len(index), -1, dtype=np.int64)
    rows[[index[c] for c in probe.class_names]] = np.arange(probe.num_classes)
    return LinearScorer(probe, rows, {"source": str(path), "C": probe.C,
                                       "normalization": probe.normalization})


def _linear_scorer(source: FeatureSource, settings: Settings, reference: FeatureSet,
                   progress: bool) -> LinearScorer:
    """The saved probe, or one fitted on the reference's train (C chosen on val) over the
    classes train has (all 1,000 for ImageNet)."""
    from probes.linear import fit_linear_probe

    if settings.probe is not None:
        return _saved_probe(settings.probe, reference)
    sets = {split: source.load(settings.reference, split) for split in ("train", "val")}
    class_names = check_same_classes({**sets, settings.reference_split: reference},
                                     settings.reference)
    rows = np.full(len(class_names), -1, dtype=np.int64)
    present = np.unique(sets["train"].labels)
    rows[present] = np.arange(len(present))
    val_y = rows[sets["val"].labels]
    keep = val_y >= 0
    options = settings.linear_settings.probe_options(progress)
    if settings.device is not None:
        options["device"] = settings.device
    fit = fit_linear_probe(sets["train"].features, rows[sets["train"].labels],
                           sets["val"].features[keep], val_y[keep],
                           class_names=[class_names[c] for c in present], **options)
    info = {"source": "trained", "protocol": "featkit probe linear", **fit.settings(),
            "val_sweep": fit.sweep_curve()}
    warnings = [f"probe: {w}" for w in fit.warnings]
    if len(present) < len(class_names):
        warnings.append(f"the probe learns the {len(present)} of {len(class_names)} "
                        f"{settings.reference} classes that have training images")
    return LinearScorer(fit.probe, rows, info, warnings)


def _knn_scorer(source: FeatureSource, settings: Settings, reference: FeatureSet) -> KnnScorer:
    options = settings.knn_settings
    sets = {split: source.load(settings.reference, split) for split in options.bank_splits}
    check_same_classes({**sets, settings.reference_split: reference}, settings.reference)
    bank_x = np.concatenate([fs.features for fs in sets.values()])
    bank_y = np.concatenate([fs.labels for fs in sets.values()]).astype(np.int64)
    return KnnScorer(bank_x, bank_y, options, settings.device or options.device)


def _zeroshot_scorer(source: FeatureSource, settings: Settings, reference: FeatureSet,
                     progress: bool) -> ZeroShotScorer:
    """Class embeddings as the zero-shot task makes them (each prompt embedded by the model's
    own text side and normalised, averaged over the templates, normalised: the CLIP formula),
    cached with the text cache; CLIP-style towers and VLMs alike."""
    from featkit.classnames import TemplateSet
    from featkit.datasets.imagenet import readable_names
    from featkit.text_cache import TextSource, class_embeddings

    names = readable_names(reference.class_names)
    templates = TemplateSet("shift", tuple(settings.templates), "featkit shift --templates")
    text = class_embeddings(
        TextSource(source.model, weights=source.weights, adapter=source.adapter,
                   cache_dir=source.cache_dir, device=settings.device,
                   weights_identity=reference.meta.get("weights")),
        settings.reference, names, templates, progress=progress)
    if text.embeddings.shape[1] != reference.features.shape[1]:
        raise FeatkitError(f"zero-shot: {source.model}'s text embeddings are "
                           f"{text.embeddings.shape[1]}-d but the '{reference.kind}' image "
                           f"features are {reference.features.shape[1]}-d; use --features in the "
                           f"text space (e.g. aligned for CLIP, last_token for the VLMs)")
    return ZeroShotScorer(text.embeddings.astype(np.float32), settings.templates)


# --------------------------------------------------------------------------- scoring


def class_subset(shifted: FeatureSet, name: str, reference: FeatureSet,
                 data_roots: Mapping[str, str]) -> tuple[ClassSubset, dict[str, list[str]]]:
    """The reference classes each class of ``shifted`` stands for, and the mapping to record
    (empty when every class is a reference class of the same name). A set whose classes are
    not reference classes is asked for its mapping by its reader (ObjectNet's ``mappings/``)."""
    from featkit.datasets import open_dataset
    from featkit.datasets.imagenet import ShiftedImageNet
    from probes.shift import ClassSubset

    known = set(reference.class_names)
    if all(c in known for c in shifted.class_names):
        return ClassSubset.from_names(shifted.class_names, reference.class_names), {}
    root = data_roots.get(name) or shifted.meta.get("data_root")
    reader = open_dataset(name, root) if root else None
    if not isinstance(reader, ShiftedImageNet):
        raise FeatkitError(f"{name}'s classes are not {reference.dataset or 'reference'} classes "
                           f"and featkit knows no mapping for them; shift sets are "
                           f"{', '.join(DEFAULT_SHIFTS)} and the other ImageNetV2 variants")
    mapping = reader.reference_classes()
    missing = [c for c in shifted.class_names if c not in mapping]
    if missing:
        raise FeatkitError(f"{name}: classes {', '.join(missing[:3])} of the cached features are "
                           f"not in the mapping read from {root}; re-extract or pass the right "
                           f"data root")
    mapping = {c: list(mapping[c]) for c in shifted.class_names}
    return ClassSubset.from_names(shifted.class_names, reference.class_names, mapping), mapping


def score_set(scorer: Scorer, subset: ClassSubset, features: np.ndarray, labels: np.ndarray,
              reference_features: np.ndarray, reference_labels: np.ndarray,
              reference_scores: np.ndarray | None = None
              ) -> tuple[MaskedAccuracy, MaskedAccuracy, np.ndarray]:
    """One shifted set and its reference counterpart: (shifted accuracy, reference accuracy,
    the reference rows it used). ``reference_scores``: the scorer's scores of every reference
    item over every reference class (linear and zero-shot compute them once per run and slice
    them here); None computes the rows and columns needed (kNN, whose bank depends on them)."""
    from probes.shift import reference_accuracy, shifted_accuracy

    columns = subset.columns
    rows = subset.reference_items(reference_labels)
    if reference_scores is None:
        ref_scores = scorer.scores(reference_features[rows], columns)
    elif columns.size == reference_scores.shape[1]:
        ref_scores = reference_scores if rows.size == len(reference_labels) \
            else reference_scores[rows]
    else:
        ref_scores = reference_scores[np.ix_(rows, columns)]
    ref = reference_accuracy(ref_scores, reference_labels[rows], subset)
    shifted = shifted_accuracy(scorer.scores(features, columns), labels, subset)
    return shifted, ref, rows


def run(source: FeatureSource, shifted: Sequence[str] = DEFAULT_SHIFTS,
        settings: Settings | None = None, *, save_probe: str | os.PathLike | None = None,
        progress: bool = True) -> Outcome:
    """Fit (or load, or build) the classifier on the reference once, then score every shifted
    set and its reference counterpart; one record per shifted set (task ``"shift"``)."""
    settings = settings or Settings()
    if not shifted:
        raise FeatkitError("--eval names no shifted dataset")
    reference = source.load(settings.reference, settings.reference_split)
    if settings.classifier == "linear":
        scorer: Scorer = _linear_scorer(source, settings, reference, progress)
    elif settings.classifier == "knn":
        scorer = _knn_scorer(source, settings, reference)
    else:
        scorer = _zeroshot_scorer(source, settings, reference, progress)
    if save_probe and isinstance(scorer, LinearScorer):
        scorer.info["saved_to"] = str(scorer.probe.save(save_probe))
    roots = dict(settings.data_roots)
    all_columns = np.arange(len(reference.class_names))
    full_reference: np.ndarray | None = None
    records = []
    for name in shifted:
        fs = source.load(name, settings.split)
        covered, mapping = class_subset(fs, name, reference, roots)
        subset = covered.restricted(scorer.known)
        columns = subset.columns
        if columns.size == 0:
            raise FeatkitError(f"{name}: none of the {covered.columns.size} {settings.reference} "
                               f"classes it covers has training data for the classifier")
        if full_reference is None and not isinstance(scorer, KnnScorer):
            full_reference = scorer.scores(reference.features, all_columns)
        result, ref, rows = score_set(scorer, subset, fs.features, fs.labels,
                                      reference.features, reference.labels, full_reference)
        items = {
            "top1": ItemScores.of(result.correct, fs.sample_ids),
            "reference_top1": ItemScores.of(ref.correct, [reference.sample_ids[i] for i in rows],
                                            unit="reference test items"),
        }
        unscored = int(covered.columns.size - columns.size)
        notes = [f"{unscored} of the {covered.columns.size} {settings.reference} classes "
                 f"{name} covers have no training data; its scores span the other "
                 f"{columns.size}"] if unscored else []
        records.append(_record(source, settings, scorer, name, fs, reference, covered, subset,
                               mapping, result.top1, ref.top1, items, notes))
    return Outcome(records, scorer.probe if isinstance(scorer, LinearScorer) else None)


def _record(source: FeatureSource, settings: Settings, scorer: Scorer, name: str,
            fs: FeatureSet, reference: FeatureSet, covered: ClassSubset, subset: ClassSubset,
            mapping: Mapping[str, list[str]], top1: float, ref_top1: float,
            items: Mapping[str, ItemScores], notes: Sequence[str]) -> dict[str, Any]:
    from featkit.results import make_result

    metrics = {"top1": top1, "reference_top1": ref_top1, "drop": ref_top1 - top1}
    extra: dict[str, Any] = {
        "reference": settings.reference,
        "counts": {settings.split: items["top1"].n, "reference": items["reference_top1"].n},
        "per_item": per_item_record(items),
    }
    if mapping:
        extra["class_mapping"] = mapping
    if settings.ci is not None:
        extra["ci"] = interval_record(items, settings.ci, metrics)
    record_settings = {
        "classifier": scorer.name,
        "reference": settings.reference,
        "reference_split": settings.reference_split,
        "split": settings.split,
        "classes": len(subset.groups),
        "reference_classes": int(covered.columns.size),
        "scored_classes": int(subset.columns.size),
        "masked": not covered.complete,
        "protocol": PROTOCOL,
        **scorer.settings(),
        "device": settings.device or "auto",
    }
    provenance = {**fs.meta, "reference": dict(reference.meta)}
    warnings = [*scorer.warnings, *notes, *fs.notes, *reference.notes]
    return make_result(INFO.name, model=fs.model or source.model, dataset=name,
                       features=fs.kind, metrics=metrics, settings=record_settings,
                       provenance=provenance, extra=extra, warnings=warnings)


def summary_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per shifted set: classes, items, reference and shifted top-1, drop."""
    from featkit.results import format_table

    rows = []
    for record in records:
        m, s = record["metrics"], record["settings"]
        ci = record.get("ci", {}).get("metrics", {})
        row = {"shifted set": record["dataset"], "classes": s["classes"],
               "items": record["counts"][s["split"]],
               f"{record['reference']} top1 (same classes)": m["reference_top1"],
               "shifted top1": m["top1"], "drop (points)": f"{100 * m['drop']:+.2f}"}
        if ci:
            row[f"shifted {100 * record['ci']['level']:g}% CI"] = (
                f"[{100 * ci['top1']['low']:.2f}, {100 * ci['top1']['high']:.2f}]")
        rows.append(row)
    return format_table(rows)
