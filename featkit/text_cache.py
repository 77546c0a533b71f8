"""Class embeddings (template-averaged text embeddings) cached beside the image features.

One HDF5 file per key under ``<cache root>/_text/<model-slug>/<dataset>/``:
``prompts-<template set>-<digest>.h5``, keyed by a :class:`featkit.cache.CacheKey` whose fields
are the model, its weights identity, the tokenizer (as ``preprocessing``), the text settings and
the templates (``settings``), the dataset and the digest of the class names (``samples``). The
file has the image cache's layout (``features/text`` C x D, ``labels`` 0..C-1, the clean names as
``sample_ids`` and ``class_names``, provenance attributes), so :func:`featkit.featureset.load_file`
reads it and ``featkit info`` describes it; ``featkit cache ls`` lists it (split ``text``) and
``featkit cache prune`` removes it when corrupt or foreign, and its abandoned shards.

Writing works like extraction: classes are embedded in fixed-size shards, each written
atomically into ``<file>.parts/``; the final file is assembled and renamed into place under the
key's lock, so a killed run resumes from its last shard and a second process waits and reuses
the result. Embeddings that are not finite are refused before they are stored.

Finding a file needs no model: the files of (model, dataset) whose class names, templates and,
when known, weights and adapter identities match are candidates, and the newest is used (the
image features' weights identity is passed, so text and images always come from one
checkpoint). Only when none matches is the text tower loaded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.cache import (
    CacheKey,
    Shard,
    base_attrs,
    cache_root,
    key_lock,
    parts_dir,
    read_parts_meta,
    read_shard,
    slug,
    write_final,
    write_parts_meta,
    write_shard,
)
from featkit.cache_files import inspect_file
from featkit.errors import FeatkitError

if TYPE_CHECKING:
    from extractors.text_towers import TextTower
    from featkit.classnames import TemplateSet

#: the folder under the cache root that holds text embeddings
TEXT_FOLDER = "_text"
#: the feature kind a text file stores
TEXT_KIND = "text"
#: prompts embedded per shard (whole classes: at least one class per shard)
PROMPTS_PER_SHARD = 2048
POOLING = "each prompt L2-normalised, averaged over the templates, L2-normalised (CLIP)"


@dataclass(frozen=True)
class TextSource:
    """Whose text side embeds the classes: ``model`` with ``weights``/``adapter`` (local
    paths, as for its image features), on ``device`` in ``precision``, cached under
    ``cache_dir``. ``weights_identity``: the identity the embeddings must have (that of the
    image features they are compared with), or None for any."""

    model: str
    weights: str | os.PathLike | None = None
    adapter: str | os.PathLike | None = None
    cache_dir: str | os.PathLike | None = None
    device: str | None = None
    precision: str = "fp32"
    weights_identity: str | None = None


@dataclass
class ClassEmbeddings:
    """``(C, D)`` float32 unit rows, one per class name, and the file they were read from."""

    embeddings: np.ndarray
    class_names: list[str]
    templates: list[str]
    template_set: str
    meta: dict[str, Any]
    path: Path
    computed: bool = False
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, Any]:
        """What a record says about the text side."""
        fields = self.meta.get("key_fields") or {}
        return {"file": str(self.path), "model": self.meta.get("model"),
                "weights": self.meta.get("weights"), "tokenizer": fields.get("preprocessing"),
                "text_settings": (fields.get("settings") or {}).get("text"),
                "pooling": POOLING, "template_set": self.template_set,
                "templates": list(self.templates), "created_at": self.meta.get("created_at")}


def names_digest(names: Sequence[str]) -> str:
    """The digest a list of class names (in order) is keyed by."""
    return hashlib.sha256("\n".join(str(n) for n in names).encode()).hexdigest()


def text_key(tower: TextTower, dataset: str, names: Sequence[str], templates: TemplateSet
             ) -> CacheKey:
    """The cache key of ``names`` embedded by ``tower`` with ``templates``."""
    return CacheKey(
        model=tower.model,
        weights=tower.weights_identity,
        preprocessing={"tokenizer": tower.tokenizer},
        settings={"text": tower.settings(), "image_kind": tower.image_kind, "pooling": POOLING,
                  "template_set": templates.name, "templates": list(templates.templates)},
        dataset=dataset,
        data_root="",
        split=f"prompts-{slug(templates.name)}",
        samples=names_digest(names),
    )


def text_folder(model_id: str, dataset: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the text files of (model, dataset) live."""
    return cache_root(cache_dir) / TEXT_FOLDER / slug(model_id) / dataset


def find_text_files(source: TextSource, dataset: str, names: Sequence[str],
                    templates: TemplateSet) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Usable cached files for these names and templates (oldest first), and notes on unusable
    ones; narrowed to the source's weights and adapter identities when they are known."""
    from extractors import canonical_id
    from extractors.weights import weights_identity

    wanted_weights = source.weights_identity or (
        weights_identity(source.weights) if source.weights else None)
    wanted_adapter = weights_identity(source.adapter) if source.adapter else None
    digest = names_digest(names)
    folder = text_folder(canonical_id(source.model), dataset, source.cache_dir)
    found, notes = [], []
    for path in sorted(folder.glob(f"prompts-{slug(templates.name)}-*.h5")):
        attrs, problem = inspect_file(path)
        if problem:
            notes.append(f"skipped {path}: {problem}")
            continue
        fields = attrs.get("key_fields") or {}
        settings = fields.get("settings") or {}
        if fields.get("samples") != digest or settings.get("templates") != list(templates.templates):
            continue
        if wanted_weights is not None and fields.get("weights") != wanted_weights:
            continue
        if (settings.get("text") or {}).get("adapter") != wanted_adapter:
            continue
        found.append((path, attrs))
    found.sort(key=lambda item: (item[0].stat().st_mtime_ns, item[0].name))
    return found, notes


def class_embeddings(
    source: TextSource,
    dataset: str,
    names: Sequence[str],
    templates: TemplateSet,
    *,
    tower: TextTower | Callable[[], TextTower] | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> ClassEmbeddings:
    """The class embeddings of ``names`` (clean class names, in label order) with
    ``templates``: read from the cache, else computed (resumably) and cached. ``tower``: a
    loaded text tower to use, or a function that loads one only when it is needed (see
    :func:`lazy_tower`); None loads the source's."""
    names = [str(n) for n in names]
    if not names:
        raise FeatkitError(f"{dataset}: no class names to embed")
    if not overwrite:
        found, notes = find_text_files(source, dataset, names, templates)
        if found:
            return _read(found[-1][0], templates, notes=notes)
    from extractors.text_towers import TextTower

    if tower is None:
        tower = lazy_tower(source)
    if not isinstance(tower, TextTower):
        tower = tower()
    if source.weights_identity is not None and tower.weights_identity != source.weights_identity:
        raise FeatkitError(
            f"{tower.model}: the text tower's weights ({tower.weights_identity}) are not those of "
            f"the image features ({source.weights_identity}); pass the same --weights")
    key = text_key(tower, dataset, names, templates)
    path = key.path(cache_root(source.cache_dir) / TEXT_FOLDER)
    with key_lock(path):
        if path.exists() and not overwrite and inspect_file(path)[1] is None:
            return _read(path, templates)  # another process wrote it while we waited
        _compute(path, key, tower, names, templates, progress=progress)
    return _read(path, templates, computed=True)


def lazy_tower(source: TextSource) -> Callable[[], TextTower]:
    """A function returning the source's text tower, loaded on its first call only (several
    datasets' class embeddings then share one load, and cached ones need none)."""
    loaded: list[TextTower] = []

    def get() -> TextTower:
        if not loaded:
            from extractors.text_towers import load_text_tower

            loaded.append(load_text_tower(source.model, weights=source.weights,
                                          adapter=source.adapter, device=source.device,
                                          precision=source.precision))
        return loaded[0]

    return get


def _read(path: Path, templates: TemplateSet, *, notes: Sequence[str] = (),
          computed: bool = False) -> ClassEmbeddings:
    from featkit.featureset import load_file

    fs = load_file(path, TEXT_KIND)
    return ClassEmbeddings(fs.features, list(fs.class_names), list(templates.templates),
                           templates.name, fs.meta, path, computed, list(notes))


def _compute(path: Path, key: CacheKey, tower: TextTower, names: list[str],
             templates: TemplateSet, *, progress: bool) -> None:
    """Embed every class in shards (reusing finished ones), then assemble the final file."""
    from probes._checks import check_finite
    from probes.zeroshot import class_embeddings as average

    parts = parts_dir(path)
    meta = read_parts_meta(parts)
    per_shard = max(1, PROMPTS_PER_SHARD // len(templates.templates))
    if meta and meta.get("key") == key.digest:
        per_shard = int(meta["shard_classes"])
    else:
        write_parts_meta(parts, {"key": key.digest, "key_fields": key.as_dict(),
                                 "shard_classes": per_shard})
    n_templates = len(templates.templates)
    blocks = []
    for index, start in enumerate(range(0, len(names), per_shard)):
        stop = min(len(names), start + per_shard)
        shard = read_shard(parts, index)
        if shard is None or shard.positions.tolist() != list(range(start, stop)):
            prompts = [p for name in names[start:stop] for p in templates.prompts(name)]
            vectors = tower.encode(prompts, progress=progress)
            check_finite(vectors, f"{tower.model} text embeddings")
            embedded = average(vectors.reshape(stop - start, n_templates, -1))
            shard = Shard(index, np.arange(start, stop), {TEXT_KIND: embedded})
            write_shard(parts, shard)
        blocks.append(shard.features[TEXT_KIND])
    embeddings = np.concatenate(blocks).astype(np.float32)
    attrs = {
        **base_attrs(),
        "key": key.digest,
        "key_fields": key.as_dict(),
        "model": key.model,
        "dataset": key.dataset,
        "split": key.split,
        "weights": key.weights,
        "n": len(names),
        "kinds": [TEXT_KIND],
        "dims": {TEXT_KIND: int(embeddings.shape[1])},
        "image_kind": tower.image_kind,
        "template_set": templates.name,
        "template_source": templates.source,
        "templates": list(templates.templates),
    }
    write_final(path, features={TEXT_KIND: embeddings}, labels=np.arange(len(names)),
                sample_ids=names, class_names=names, attrs=attrs)
    _remove_parts(parts)


def _remove_parts(parts: Path) -> None:
    import shutil

    shutil.rmtree(parts, ignore_errors=True)
