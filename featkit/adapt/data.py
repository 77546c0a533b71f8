"""Training pairs for contrastive adaptation: (image, query text, target text).

The query is an image plus text: the model sees ``"<image-token> <query>"`` (the image token is
added when batches are built, see :mod:`featkit.adapt.train`). The target is text alone, embedded
without an instruction, as VLM2Vec embeds text targets and :func:`featkit.embed_texts` embeds
texts by default. Two task signals (seed 001):

``caption``
    query ``"Represent the given image."`` (the ``last_token`` extraction prompt), target a
    class-name caption, ``"a photo of a Black footed Albatross."`` by default.
``vqa``
    query ``"Represent the given image with the following question: <question>"`` with a
    per-dataset question (``"What is the species of the bird?"``), target the class name.

Pairs also come from a JSONL file, one object a line: ``image`` (a path, relative to the file's
folder or ``image_root``), ``query`` (a question; featkit prefixes the VQA instruction, or pass
``instruction=""`` to use it verbatim; absent or null means the caption query) and ``target``.
Bad rows are reported together, each with its line number.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.errors import FeatkitError

CAPTION_QUERY = "Represent the given image."
VQA_INSTRUCTION = "Represent the given image with the following question:"
DEFAULT_CAPTION_TEMPLATE = "a photo of a {}."
CAPTION_TEMPLATES = {"digits": "a photo of the digit {}."}
DEFAULT_QUESTION = "What is the main object in the image?"
QUESTIONS = {
    "cub": "What is the species of the bird?",
    "dogs": "What is the breed of the dog?",
    "cars": "What is the make, model and year of the car?",
    "aircraft": "What is the variant of the aircraft?",
    "flowers": "What is the species of the flower?",
    "food": "What is the name of the dish?",
    "cifar100": "What is the main object in the image?",
    "digits": "Which digit is shown in the image?",
}
TASKS = ("caption", "vqa")
MAX_REPORTED_ROWS = 5


@dataclass(frozen=True)
class Pair:
    """One training pair. ``image`` names the image (a file path or ``dataset:sample_id``);
    ``locator`` is what loads it (a path, or a dataset :class:`~featkit.datasets.Sample`)."""

    image: str
    query: str
    target: str
    locator: Any = None
    line: int | None = None


@dataclass
class PairSet:
    """Pairs plus what they came from; :meth:`load_image` decodes pair ``i``'s image (picklable,
    for DataLoader workers)."""

    pairs: list[Pair]
    source: str
    task: str
    dataset: Any = None
    skipped: list[str] = field(default_factory=list)
    extraction_instruction: str | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def load_image(self, index: int):
        from PIL import Image

        pair = self.pairs[index]
        try:
            if self.dataset is not None:
                image = self.dataset.load_image(pair.locator)
            else:
                with Image.open(pair.locator) as opened:
                    opened.load()
                    image = opened.copy()
        except (OSError, SyntaxError, ValueError) as err:
            where = f" (line {pair.line})" if pair.line else ""
            raise FeatkitError(f"cannot decode image {pair.image}{where}: {err}") from None
        return image if image.mode == "RGB" else image.convert("RGB")

    def target_ids(self) -> np.ndarray:
        """``(N,)`` int64: equal ids for equal target texts (duplicates are not negatives)."""
        ids: dict[str, int] = {}
        return np.array([ids.setdefault(p.target, len(ids)) for p in self.pairs], dtype=np.int64)

    def digest(self) -> str:
        """sha256 of the pairs (image names and texts, in order): the data part of a run's identity."""
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(json.dumps([pair.image, pair.query, pair.target]).encode())
            digest.update(b"\n")
        return f"sha256:{digest.hexdigest()}"

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "task": self.task,
            "pairs": len(self.pairs),
            "distinct_targets": len({p.target for p in self.pairs}),
            "digest": self.digest(),
            "skipped_rows": len(self.skipped),
            "example": {"query": self.pairs[0].query, "target": self.pairs[0].target} if self.pairs else None,
        }


def readable_class_name(name: str) -> str:
    """``"Black_footed_Albatross"`` -> ``"Black footed Albatross"`` (underscores to spaces)."""
    return " ".join(str(name).replace("_", " ").split())


def caption_pairs(dataset, split: str = "train", *, template: str | None = None) -> PairSet:
    """Caption task over a featkit dataset: query = image + ``"Represent the given image."``,
    target = ``template`` filled with the class name (default ``"a photo of a {}."``)."""
    template = template or CAPTION_TEMPLATES.get(dataset.name, DEFAULT_CAPTION_TEMPLATE)
    if "{}" not in template:
        raise FeatkitError(f"caption template {template!r} has no '{{}}' for the class name")
    captions = [template.format(readable_class_name(n)) for n in dataset.class_names]
    return _dataset_pairs(dataset, split, "caption", lambda label: (CAPTION_QUERY, captions[label]),
                          extraction_instruction=CAPTION_QUERY)


def vqa_pairs(dataset, split: str = "train", *, question: str | None = None) -> PairSet:
    """VQA task over a featkit dataset: query = image + the VQA instruction and a question about
    the class (per dataset, e.g. ``"What is the species of the bird?"``), target = the class name."""
    question = question or QUESTIONS.get(dataset.name, DEFAULT_QUESTION)
    query = f"{VQA_INSTRUCTION} {question}"
    names = [readable_class_name(n) for n in dataset.class_names]
    return _dataset_pairs(dataset, split, "vqa", lambda label: (query, names[label]), extraction_instruction=query)


def _dataset_pairs(dataset, split: str, task: str, texts, *, extraction_instruction: str) -> PairSet:
    pairs = []
    for sample in dataset.samples(split):
        query, target = texts(sample.label)
        pairs.append(Pair(f"{dataset.name}:{sample.sample_id}", query, target, locator=sample))
    if not pairs:
        raise FeatkitError(f"dataset '{dataset.name}' split '{split}' has no samples to train on")
    return PairSet(pairs, source=f"{dataset.name}:{split}", task=task, dataset=dataset,
                   extraction_instruction=extraction_instruction)


def build_pairs(dataset, task: str, split: str = "train", **options: Any) -> PairSet:
    """:func:`caption_pairs` or :func:`vqa_pairs` by ``task`` name."""
    if task == "caption":
        return caption_pairs(dataset, split, template=options.get("template"))
    if task == "vqa":
        return vqa_pairs(dataset, split, question=options.get("question"))
    raise FeatkitError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def read_pairs_jsonl(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    instruction: str | None = VQA_INSTRUCTION,
    skip_bad_rows: bool = False,
) -> PairSet:
    """Pairs from a JSONL file (see the module docstring for the fields).

    Every bad row (invalid JSON, a missing or empty field, an image file that does not exist) is
    reported as ``file:line: problem``; the read fails unless ``skip_bad_rows``, in which case the
    problems are kept in :attr:`PairSet.skipped`.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise FeatkitError(f"cannot read pairs from {path}: {err.strerror or err}") from None
    root = Path(image_root).expanduser() if image_root else path.parent
    pairs: list[Pair] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        pair, problem = _parse_row(line, lineno, root, instruction)
        if problem:
            problems.append(f"{path}:{lineno}: {problem}")
        else:
            pairs.append(pair)
    if problems and not skip_bad_rows:
        shown = "; ".join(problems[:MAX_REPORTED_ROWS])
        more = f"; and {len(problems) - MAX_REPORTED_ROWS} more" if len(problems) > MAX_REPORTED_ROWS else ""
        raise FeatkitError(f"{len(problems)} bad row(s) in {path}: {shown}{more}; fix them or pass --skip-bad-rows")
    if not pairs:
        raise FeatkitError(f"{path} holds no usable pairs (one JSON object a line with image, query, target)")
    query_prompt = None
    queries = {p.query for p in pairs}
    if len(queries) == 1:
        query_prompt = next(iter(queries))
    return PairSet(pairs, source=str(path), task="pairs", skipped=problems, extraction_instruction=query_prompt)


def _parse_row(line: str, lineno: int, root: Path, instruction: str | None) -> tuple[Pair | None, str | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        return None, "'image' is missing or empty"
    target = row.get("target")
    if not isinstance(target, str) or not target.strip():
        return None, "'target' is missing or empty"
    query = row.get("query")
    if query is None:
        query_text = CAPTION_QUERY
    elif not isinstance(query, str) or not query.strip():
        return None, "'query' is empty (leave it out for the caption query)"
    else:
        query_text = f"{instruction} {query.strip()}" if instruction else query.strip()
    image_path = Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = root / image_path
    if not image_path.is_file():
        return None, f"image not found: {image_path}"
    return Pair(str(image_path), query_text, target.strip(), locator=str(image_path), line=lineno), None

