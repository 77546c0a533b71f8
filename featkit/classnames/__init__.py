"""Clean class names and prompt templates, as data: the text side of zero-shot and MC questions.

The built-in lists live in ``featkit/classnames/data/`` (package data): one JSON file per dataset
(``{"dataset", "noun", "templates", "source", "classes"}``, classes in the dataset's official
label order) and ``templates.json`` (``{set name: {"source", "templates"}}``, ``{}`` marks where
the class name goes). Each entry says where its names or prompts come from.

A dataset's cached class names are matched to a list by a normalised key (lower case, letters
and digits only), so ``Black_footed_Albatross`` finds ``Black footed Albatross`` whatever the
order; a list whose names differ (CLIP renamed a few flowers; ImageNet folders are wnids) is
matched by position when it has as many classes. Either way the record says how
(:attr:`ClassNames.matched_by`). Datasets without a list (``imagefolder``, ``manifest``) use
their own names with underscores as spaces and numeric prefixes (``001.``) dropped.

Every list and set can be replaced from a file: class names as a ``.txt`` (one per line, label
order) or ``.json`` (a list in label order, ``{"classes": [...]}``, or ``{"raw name": "clean
name"}``); templates as a ``.txt`` (one per line) or ``.json`` (a list, or ``{"templates":
[...]}``), each with one ``{}`` (CLIP_benchmark's ``{c}`` is accepted).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError, UnknownNameError, closest

#: The template set zero-shot uses when none is named: seed 002's single prompt.
DEFAULT_TEMPLATES = "simple"
#: The template-set name that means "the dataset's own set" (CLIP's per-dataset prompts).
DATASET_TEMPLATES = "dataset"
#: The noun of a question about a dataset without a list of its own.
DEFAULT_NOUN = "object"
PLACEHOLDER = "{}"


@dataclass(frozen=True)
class ClassNames:
    """The clean names of a dataset's classes, in the label order of its cached features.

    ``matched_by``: ``"name"`` (keys matched one to one), ``"position"`` (as many names, in the
    list's order; ``verified`` of them also match by key), ``"file"`` (a user file, in label
    order or as a raw -> clean mapping) or ``"cleaned"`` (the dataset's own names, cleaned).
    """

    names: tuple[str, ...]
    source: str
    matched_by: str
    verified: int | None = None

    def provenance(self) -> dict[str, Any]:
        """What a record says about these names."""
        out: dict[str, Any] = {"source": self.source, "matched_by": self.matched_by,
                               "names": list(self.names)}
        if self.verified is not None:
            out["verified_by_name"] = self.verified
        return out


@dataclass(frozen=True)
class TemplateSet:
    """Prompt templates (each with one ``{}``) and where they come from."""

    name: str
    templates: tuple[str, ...]
    source: str

    def prompts(self, class_name: str) -> list[str]:
        """The prompts of one class, in template order."""
        return [t.replace(PLACEHOLDER, class_name) for t in self.templates]

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "templates": list(self.templates)}


@dataclass(frozen=True)
class DatasetEntry:
    """One built-in dataset list: clean names in label order, the question noun and the name
    of the dataset's own template set."""

    dataset: str
    classes: tuple[str, ...]
    noun: str
    templates: str
    source: str


def _data_dir():
    return resources.files("featkit.classnames") / "data"


@functools.cache
def _builtin_entries() -> dict[str, DatasetEntry]:
    entries = {}
    for item in sorted(_data_dir().iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json") or item.name == "templates.json":
            continue
        data = json.loads(item.read_text(encoding="utf-8"))
        entries[data["dataset"]] = DatasetEntry(
            dataset=data["dataset"], classes=tuple(data["classes"]), noun=data["noun"],
            templates=data["templates"], source=data["source"])
    return entries


@functools.cache
def _builtin_templates() -> dict[str, TemplateSet]:
    data = json.loads((_data_dir() / "templates.json").read_text(encoding="utf-8"))
    return {name: TemplateSet(name, tuple(item["templates"]), item["source"])
            for name, item in data.items()}


def builtin_class_lists() -> list[str]:
    """The datasets that have a built-in list of clean class names."""
    return list(_builtin_entries())


def builtin_template_sets() -> list[str]:
    """The names of the built-in template sets."""
    return list(_builtin_templates())


def dataset_entry(dataset: str) -> DatasetEntry | None:
    """The built-in list of ``dataset``, or None."""
    return _builtin_entries().get(dataset)


def question_noun(dataset: str) -> str:
    """What a multiple-choice question asks about (``bird`` for CUB), ``object`` by default."""
    entry = dataset_entry(dataset)
    return entry.noun if entry else DEFAULT_NOUN


def name_key(name: str) -> str:
    """The key names are matched by: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def clean_name(raw: str) -> str:
    """A dataset's own class name made readable: numeric prefix (``001.``) dropped,
    underscores as spaces, runs of spaces folded."""
    text = re.sub(r"^\d+[._-]", "", str(raw)).replace("_", " ")
    return " ".join(text.split()) or str(raw)


# --------------------------------------------------------------------------- class names


def resolve_class_names(
    dataset: str,
    raw_names: Sequence[str],
    override: str | os.PathLike | None = None,
) -> ClassNames:
    """The clean names of ``dataset``'s classes (``raw_names``: as its cache lists them).

    ``override``: a built-in list's name (e.g. ``imagenet`` for an ``imagefolder`` copy of
    ImageNet) or a file (see the module docstring). Without one, the dataset's own built-in
    list, else its cleaned names. A list that fits neither by name nor by count is a one-line
    error.
    """
    raw = [str(n) for n in raw_names]
    if override is not None:
        text = str(override)
        entry = _builtin_entries().get(text)
        if entry is not None:
            return _align(text, raw, list(entry.classes), f"featkit list '{text}': {entry.source}")
        path = Path(text).expanduser()
        if not path.is_file():
            raise UnknownNameError(
                f"--classnames {text}: neither a file nor a built-in list"
                f"{closest(text, builtin_class_lists())} (lists: {', '.join(builtin_class_lists())})"
            )
        return _from_file(dataset, raw, path)
    entry = _builtin_entries().get(dataset)
    if entry is None:
        return ClassNames(tuple(clean_name(n) for n in raw), f"{dataset}'s own class names",
                          "cleaned")
    return _align(dataset, raw, list(entry.classes), f"featkit list '{dataset}': {entry.source}")


def _align(list_name: str, raw: list[str], clean: list[str], source: str) -> ClassNames:
    """``clean`` reordered to the labels of ``raw``: by key when every raw name finds exactly
    one clean name (a subset of the classes too), else by position when the counts agree."""
    by_key: dict[str, list[int]] = {}
    for index, name in enumerate(clean):
        by_key.setdefault(name_key(name), []).append(index)
    found = [by_key.get(name_key(r), []) for r in raw]
    if all(len(f) == 1 for f in found) and len({f[0] for f in found}) == len(raw):
        return ClassNames(tuple(clean[f[0]] for f in found), source, "name")
    if len(raw) == len(clean):
        verified = sum(name_key(r) == name_key(c) for r, c in zip(raw, clean))
        return ClassNames(tuple(clean), source, "position", verified)
    raise FeatkitError(
        f"the class-name list '{list_name}' has {len(clean)} classes but the cached features "
        f"have {len(raw)}; pass --classnames FILE with one name per class"
    )


def _from_file(dataset: str, raw: list[str], path: Path) -> ClassNames:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FeatkitError(f"--classnames {path}: cannot read it ({err})") from None
    source = f"file {path}"
    if path.suffix == ".json":
        data = _json(path, text)
        if isinstance(data, Mapping) and "classes" in data:
            data = data["classes"]
        if isinstance(data, Mapping):
            if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
                raise FeatkitError(f"--classnames {path}: a mapping must be raw name -> clean name")
            missing = [r for r in raw if r not in data]
            if missing:
                raise FeatkitError(
                    f"--classnames {path}: {len(missing)} of {dataset}'s {len(raw)} classes have "
                    f"no clean name (e.g. {missing[0]!r}{closest(missing[0], list(data))})")
            return ClassNames(tuple(data[r] for r in raw), source, "file")
        names = data
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise FeatkitError(f"--classnames {path}: expected a list of non-empty class names")
    if len(names) != len(raw):
        raise FeatkitError(f"--classnames {path} lists {len(names)} names but {dataset} has "
                           f"{len(raw)} classes; give one name per class, in label order")
    return ClassNames(tuple(names), source, "file")


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FeatkitError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None


# --------------------------------------------------------------------------- templates


def resolve_templates(spec: str | os.PathLike | None = None, dataset: str | None = None
                      ) -> TemplateSet:
    """A template set: a built-in name, ``"dataset"`` (the dataset's own CLIP-style set, else
    :data:`DEFAULT_TEMPLATES`), or a file; None means :data:`DEFAULT_TEMPLATES`."""
    text = DEFAULT_TEMPLATES if spec is None else str(spec)
    builtin = _builtin_templates()
    if text == DATASET_TEMPLATES:
        entry = _builtin_entries().get(dataset or "")
        return builtin[entry.templates if entry else DEFAULT_TEMPLATES]
    if text in builtin:
        return builtin[text]
    path = Path(text).expanduser()
    if not path.is_file():
        known = [*builtin, DATASET_TEMPLATES]
        raise UnknownNameError(f"--templates {text}: neither a file nor a built-in set"
                               f"{closest(text, known)} (sets: {', '.join(known)})")
    return _templates_from_file(path)


def _templates_from_file(path: Path) -> TemplateSet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FeatkitError(f"--templates {path}: cannot read it ({err})") from None
    if path.suffix == ".json":
        data = _json(path, text)
        templates = data.get("templates") if isinstance(data, Mapping) else data
    else:
        templates = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(templates, list) or not templates or not all(
            isinstance(t, str) for t in templates):
        raise FeatkitError(f"--templates {path}: expected a non-empty list of templates")
    templates = [t.replace("{c}", PLACEHOLDER) for t in templates]
    bad = [t for t in templates if t.count(PLACEHOLDER) != 1]
    if bad:
        raise FeatkitError(f"--templates {path}: each template needs exactly one {{}} where the "
                           f"class name goes (e.g. 'a photo of a {{}}.'); got {bad[0]!r}")
    return TemplateSet(path.stem, tuple(templates), f"file {path}")
