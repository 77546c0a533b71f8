"""Multiple-choice task: question sets built from a dataset's labels, and models scored on them.

:func:`build` writes one question per image of a split: the image path, the question, K lettered
options (the true class and K - 1 distractors from :mod:`probes.multiple_choice`: a model's
hardest zero-shot negatives, the nearest classes by a model's class-mean image features,
siblings in a class tree, or random ones), the answer letter and the distractor source, as
JSONL that VLMEvalKit / lmms-eval style evaluators read (README, "Multiple-choice questions").

:func:`score` scores a model on such a file: CLIP-style models by the cosine of the cached image
feature with each option's class embedding (:mod:`featkit.text_cache`); generative VLMs by the
log-likelihood of each option (or of its letter) after the image and the question
(:class:`extractors.option_scoring.OptionScorer`: the prefix once, its KV cache reused for every
option), so no answer is parsed. Accuracy and mean per-class accuracy go into a record; every
question's prediction and option scores into a predictions JSONL.

The record stores each question's 0/1 correctness as the per-item scores of ``top1``
(``per_item``, see :mod:`featkit.tasks.intervals`; the items are the questions, named by id,
options and answer, so two records pair only on the same questions); with ``ci`` it also gets
a bootstrap interval of ``top1`` over the questions (those of several datasets resampled within
each dataset). ``mean_per_class`` (a mean over classes) and ``chance`` (fixed by the question
set) get none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice, check_device, check_positive_int

INFO = register(TaskInfo(
    name="mc", title="multiple choice", headline=("top1",),
    columns=("top1", "mean_per_class", "chance"), module=__name__,
))
SOURCES = ("clip", "visual", "hierarchy", "random")
METHODS = ("auto", "similarity", "likelihood")
TARGETS = ("option", "letter")
LENGTH_NORMS = ("none", "token")
PRECISIONS = ("fp32", "fp16", "bf16")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
QUESTION = "What type of {noun} is shown in the image?"
#: Seed 002's distractors: the hardest negatives of a zero-shot OpenCLIP ViT-L/14 (LAION-2B)
SEED_DISTRACTORS = "clip:open_clip:ViT-L-14:laion2b_s32b_b82k"
#: where :func:`run` keeps the question sets it builds, under the cache root
QUESTIONS_FOLDER = "_mc"


def parse_distractors(text: str) -> tuple[str, str | None]:
    """``random``, ``clip:MODEL``, ``visual:MODEL`` or ``hierarchy:FILE`` -> (source, argument)."""
    source, _, argument = str(text).partition(":")
    if source not in SOURCES or (source == "random") != (argument == ""):
        raise FeatkitError(f"--distractors {text!r}: use clip:MODEL, visual:MODEL, "
                           f"hierarchy:FILE or random")
    return source, argument or None


@dataclass(frozen=True)
class BuildSettings:
    """``distractors``: see :func:`parse_distractors`; ``limit``: at most this many questions
    (a seeded sample of the split); ``templates`` and ``class_names``: as for zero-shot (the
    clean names are the options); ``features``: the kind ``visual:`` compares (default
    ``visual``); ``weights``: the ``clip:``/``visual:`` model's, as extracted."""

    choices: int = 5
    distractors: str = "random"
    seed: int = 0
    split: str = "test"
    limit: int | None = None
    templates: str = "simple"
    class_names: str | None = None
    features: str | None = None
    weights: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        check_positive_int("mc build", "--choices", self.choices)
        if self.limit is not None:
            check_positive_int("mc build", "--limit", self.limit)
        check_device("mc build", self.device)
        parse_distractors(self.distractors)


@dataclass(frozen=True)
class ScoreSettings:
    """``method``: ``similarity`` (image-text cosine), ``likelihood`` (a VLM's option
    log-likelihood) or ``auto`` (likelihood for generative VLMs); ``target``: score each
    option's text or its letter; ``length_norm``: ``token`` divides a likelihood by the
    option's token count; ``batch_size``: questions whose prefixes run in one forward;
    ``ci``: a bootstrap interval of top-1 over the questions."""

    method: str = "auto"
    target: str = "option"
    length_norm: str = "none"
    templates: str = "simple"
    device: str | None = None
    precision: str = "fp32"
    batch_size: int = 8
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_positive_int("mc score", "--batch-size", self.batch_size)
        check_choice("mc score", "--method", self.method, METHODS)
        check_choice("mc score", "--score", self.target, TARGETS)
        check_choice("mc score", "--length-norm", self.length_norm, LENGTH_NORMS)
        check_choice("mc score", "--precision", self.precision, PRECISIONS)
        check_device("mc score", self.device)


# --------------------------------------------------------------------------- building


def build(dataset: str, out: str | os.PathLike, settings: BuildSettings | None = None, *,
          data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = False) -> list[dict[str, Any]]:
    """Write the questions of ``dataset``'s split to ``out`` (JSONL) and return them."""
    from featkit.classnames import name_key, question_noun, resolve_class_names
    from featkit.datasets import open_dataset
    from probes.multiple_choice import LETTERS, build_questions

    settings = settings or BuildSettings()
    source, argument = parse_distractors(settings.distractors)
    root = data_root if data_root is not None else _cached_root(source, argument, dataset,
                                                                settings, cache_dir)
    ds = open_dataset(dataset, root)
    samples = ds.samples(settings.split)
    names = resolve_class_names(dataset, ds.class_names, settings.class_names).names
    keys = {key: i for i, key in enumerate(dict.fromkeys(name_key(n) for n in names))}
    name_ids = np.array([keys[name_key(n)] for n in names])
    chosen = _sample(len(samples), settings.limit, settings.seed)
    samples = [samples[i] for i in chosen]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    inputs: dict[str, Any] = {}
    if source == "clip":
        inputs["scores"] = _zero_shot_scores(argument, dataset, samples, settings, cache_dir,
                                             progress)
    elif source == "visual":
        inputs["similarity"] = _class_similarity(argument, dataset, len(names), settings,
                                                 cache_dir)
    elif source == "hierarchy":
        inputs["distances"] = _tree_distances(argument, ds.class_names, names)
    questions = build_questions(labels, settings.choices, source, seed=settings.seed,
                                name_ids=name_ids, **inputs)
    out = Path(out)
    question_text = QUESTION.format(noun=question_noun(dataset))
    rows = []
    for index, (sample, question) in enumerate(zip(samples, questions)):
        options = [names[c] for c in question.options]
        letters = LETTERS[:len(options)]
        prompt = "\n".join([question_text, *(f"{c}. {o}" for c, o in zip(letters, options)),
                            INSTRUCTION])
        rows.append({
            "index": index,
            "question_id": f"{dataset}/{settings.split}/{sample.sample_id}",
            "dataset": dataset,
            "split": settings.split,
            "sample_id": sample.sample_id,
            "image_path": _image_path(ds, sample, out, index),
            "question": question_text,
            "options": options,
            **dict(zip(letters, options)),
            "answer": question.letter,
            "answer_index": question.answer,
            "answer_text": options[question.answer],
            "label": int(sample.label),
            "option_labels": list(question.options),
            "category": dataset,
            "distractors": settings.distractors,
            "seed": settings.seed,
            "prompt": prompt,
        })
    write_jsonl(rows, out)
    return rows


def _sample(n: int, limit: int | None, seed: int) -> list[int]:
    """All positions, or a seeded sample of ``limit`` of them in their order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng([seed, 1]).choice(n, size=limit, replace=False).tolist())


def _cached_root(source: str, model: str | None, dataset: str, settings: BuildSettings,
                 cache_dir) -> str | None:
    """Where the model's cached features say the data lives (``clip:``/``visual:``), else
    the dataset's default root."""
    if source not in ("clip", "visual"):
        return None
    fs = _source(model, settings, cache_dir, source).load(dataset, settings.split if source == "clip"
                                                          else "train")
    return fs.meta.get("data_root") or None


def _source(model: str, settings: BuildSettings, cache_dir, source: str):
    from extractors.text_towers import image_kind
    from featkit.tasks.loading import FeatureSource

    kind = image_kind(model, settings.weights) if source == "clip" else (
        settings.features or "visual")
    return FeatureSource(model, kind, weights=settings.weights, cache_dir=cache_dir)


def _rows_of(fs, samples, what: str) -> np.ndarray:
    """Indices into a cache file of ``samples`` (by sample id); missing ones are an error."""
    index = {sid: i for i, sid in enumerate(fs.sample_ids)}
    missing = [s.sample_id for s in samples if s.sample_id not in index]
    if missing:
        raise FeatkitError(f"{fs.path}: {len(missing)} image(s) of the split are not in the "
                           f"{what} features (e.g. {missing[0]}); re-extract them")
    return np.array([index[s.sample_id] for s in samples], dtype=np.int64)


def _zero_shot_scores(model: str, dataset: str, samples, settings: BuildSettings, cache_dir,
                      progress: bool) -> np.ndarray:
    """Zero-shot scores of ``model`` for each sample (seed 002's hardest negatives)."""
    from featkit.tasks import zeroshot
    from featkit.tasks.loading import load_datasets
    from featkit.text_cache import lazy_tower
    from probes.zeroshot import zeroshot_scores

    source = _source(model, settings, cache_dir, "clip")
    zs = zeroshot.Settings(templates=settings.templates, class_names=settings.class_names,
                           split=settings.split, device=settings.device)
    loaded, = load_datasets(source, [dataset], (settings.split,))
    text = zeroshot.dataset_text(source, loaded, zs,
                                 lazy_tower(zeroshot.text_source(source, loaded, zs)),
                                 progress=progress)
    rows = _rows_of(loaded.files[settings.split], samples, f"{model} zero-shot")
    return zeroshot_scores(loaded.features[settings.split][rows], text.text.embeddings,
                           device=settings.device)


def _class_similarity(model: str, dataset: str, n_classes: int, settings: BuildSettings,
                      cache_dir) -> np.ndarray:
    """Cosine similarity of the class means of ``model``'s train-split features."""
    from probes.multiple_choice import class_mean_similarity

    fs = _source(model, settings, cache_dir, "visual").load(dataset, "train")
    if len(fs.class_names) != n_classes:
        raise FeatkitError(f"{fs.path} lists {len(fs.class_names)} classes, the dataset "
                           f"{n_classes}; re-extract it")
    return class_mean_similarity(fs.features, fs.labels, n_classes)


def _tree_distances(path: str, raw: Sequence[str], clean: Sequence[str]) -> np.ndarray:
    """Tree distances between classes from a JSON ``{child: parent}`` file whose leaves are
    the dataset's class names (as cached, or clean)."""
    from probes.multiple_choice import ancestor_chains, tree_distances

    file = Path(path).expanduser()
    try:
        parents = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FeatkitError(f"hierarchy:{path}: cannot read it as JSON ({err})") from None
    if isinstance(parents, dict) and isinstance(parents.get("parents"), dict):
        parents = parents["parents"]
    if not isinstance(parents, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parents.items()):
        raise FeatkitError(f"hierarchy:{path}: expected a JSON object of child -> parent names")
    leaves = [r if r in parents else c for r, c in zip(raw, clean)]
    try:
        return tree_distances(ancestor_chains(leaves, parents))
    except FeatkitError as err:
        raise FeatkitError(f"hierarchy:{path}: {err}") from None


def _image_path(ds, sample, out: Path, index: int) -> str:
    """The image's file; images held in memory (digits, CIFAR) are written as PNGs in
    ``<out stem>_images/`` and named relative to the questions file."""
    from featkit.cache import sample_file
    from featkit.datasets.images import to_rgb

    path = sample_file(sample)
    if path is not None:
        return str(Path(path).resolve())
    folder = out.parent / f"{out.stem}_images"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{index:06d}.png"
    to_rgb(ds.load_image(sample)).save(target)
    return str(target.relative_to(out.parent))


def write_jsonl(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One JSON object per line, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The questions of a JSONL file; a line without the fields scoring needs is an error
    naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FeatkitError(f"--questions {path}: cannot read it ({err})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise FeatkitError(f"{path}:{number}: not JSON ({err.msg})") from None
        missing = [k for k in ("options", "answer_index", "prompt", "image_path", "dataset",
                               "split", "sample_id", "label") if k not in row]
        if missing:
            raise FeatkitError(f"{path}:{number}: missing {', '.join(missing)} (write the file "
                               f"with 'featkit mc build')")
        rows.append(row)
    if not rows:
        raise FeatkitError(f"--questions {path}: no questions")
    return rows


# --------------------------------------------------------------------------- a suite's cell


@dataclass(frozen=True)
class Settings:
    """The whole experiment for one model and dataset (suites, the Python API): build the
    question set (kept under ``<cache>/_mc/``, so every model answers the same questions) when
    it is not there, then score the model on it. The fields are those of :class:`BuildSettings`
    and :class:`ScoreSettings`; ``distractors`` defaults to seed 002's recipe."""

    choices: int = 5
    distractors: str = SEED_DISTRACTORS
    seed: int = 0
    split: str = "test"
    limit: int | None = None
    templates: str = "simple"
    class_names: str | None = None
    method: str = "auto"
    target: str = "option"
    length_norm: str = "none"
    device: str | None = None
    precision: str = "fp32"
    batch_size: int = 8
    ci: Interval | None = None

    def __post_init__(self) -> None:
        self.build_settings()
        self.score_settings()

    def build_settings(self) -> BuildSettings:
        return BuildSettings(choices=self.choices, distractors=self.distractors, seed=self.seed,
                             split=self.split, limit=self.limit, templates=self.templates,
                             class_names=self.class_names, device=self.device)

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(method=self.method, target=self.target,
                             length_norm=self.length_norm, templates=self.templates,
                             device=self.device, precision=self.precision,
                             batch_size=self.batch_size, ci=self.ci)


def questions_path(dataset: str, settings: Settings, cache_dir=None) -> Path:
    """Where :func:`run` keeps the question set of these build settings."""
    from featkit.cache import cache_root, slug

    limit = f"-n{settings.limit}" if settings.limit else ""
    names = f"-{slug(Path(settings.class_names).stem)}" if settings.class_names else ""
    name = (f"{settings.split}-{slug(settings.distractors)}-k{settings.choices}-s{settings.seed}"
            f"{limit}{names}.jsonl")
    return cache_root(cache_dir) / QUESTIONS_FOLDER / dataset / name


def run(source, dataset: str, settings: Settings | None = None, *, progress: bool = True
        ) -> Scored:
    """Score ``source.model`` on ``dataset``'s question set (built first when missing, from the
    data its cached features were extracted from); the predictions go beside the questions."""
    from featkit.cache import slug

    settings = settings or Settings()
    path = questions_path(dataset, settings, source.cache_dir)
    if not path.is_file():
        fs = source.load(dataset, settings.split)
        build(dataset, path, settings.build_settings(), data_root=fs.meta.get("data_root"),
              cache_dir=source.cache_dir, progress=progress)
    scored = score(source.model, path, settings.score_settings(), weights=source.weights,
                   adapter=source.adapter, cache_dir=source.cache_dir, progress=progress)
    predictions = path.with_name(f"{path.stem}.{slug(scored.record['model'])}.predictions.jsonl")
    scored.record["predictions_file"] = str(write_jsonl(scored.predictions, predictions))
    return scored


# --------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """The record and every question's prediction (the predictions JSONL's rows)."""

    record: dict[str, Any]
    predictions: list[dict[str, Any]]


def score(model: str, questions_path: str | os.PathLike, settings: ScoreSettings | None = None,
          *, weights: str | None = None, adapter: str | None = None,
          cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Scored:
    """Score ``model`` on a questions file (see the module docstring)."""
    from extractors.text_towers import image_kind
    from featkit.results import make_result
    from probes.multiple_choice import LETTERS, score_multiple_choice

    settings = settings or ScoreSettings()
    questions = read_questions(questions_path)
    kind = image_kind(model, weights)
    method = settings.method
    if method == "auto":
        method = "likelihood" if kind == "last_token" else "similarity"
    if method == "similarity":
        scores, extra_prov, features = _similarity_scores(
            model, questions, settings, weights=weights, adapter=adapter, cache_dir=cache_dir,
            kind=kind, progress=progress)
        counts = None
    else:
        scores, counts, extra_prov = _likelihood_scores(
            model, questions, Path(questions_path).parent, settings, weights=weights,
            adapter=adapter, progress=progress)
        features = f"likelihood:{settings.target}"
    datasets = sorted({q["dataset"] for q in questions})
    class_names = _label_names(questions)
    result = score_multiple_choice(scores, [q["answer_index"] for q in questions],
                                   [q["label"] for q in questions], class_names)
    predictions = []
    for i, (q, row) in enumerate(zip(questions, scores)):
        chosen = int(result.predictions[i])
        predictions.append({
            "index": q.get("index", i), "question_id": q.get("question_id"),
            "prediction": LETTERS[chosen], "prediction_text": q["options"][chosen],
            "answer": LETTERS[q["answer_index"]], "correct": bool(result.correct[i]),
            "scores": [float(s) for s in row],
            **({"n_tokens": [int(n) for n in counts[i]]} if counts is not None else {}),
        })
    extra = {"per_class": result.per_class,
             "counts": {"questions": result.n_questions, "classes": len(result.per_class)}}
    attach_item_scores(extra, {"top1": question_items(questions, result.correct)}, settings.ci,
                       result.metrics())
    record = make_result(
        INFO.name, model=extra_prov.pop("model_id"), dataset=",".join(datasets),
        features=features, metrics=result.metrics(),
        settings={"method": method, "score": settings.target if method == "likelihood" else None,
                  "length_norm": settings.length_norm if method == "likelihood" else None,
                  "templates": settings.templates if method == "similarity" else None,
                  "precision": settings.precision, "device": settings.device or "auto",
                  "choices": sorted({len(q["options"]) for q in questions}),
                  "distractors": sorted({str(q.get("distractors")) for q in questions})},
        provenance={"questions": _file_identity(questions_path, len(questions)), **extra_prov},
        extra=extra,
    )
    return Scored(record, predictions)


def question_items(questions: Sequence[dict[str, Any]], correct: np.ndarray) -> ItemScores:
    """Each question's 0/1 correctness, named by its id (or dataset/split/sample id), options
    and answer. Questions of several datasets are ordered by dataset (stably) and resampled
    within each (the strata)."""
    keys = [_question_key(q) for q in questions]
    datasets = [str(q["dataset"]) for q in questions]
    names = sorted(set(datasets))
    if len(names) == 1:
        return ItemScores.of(np.asarray(correct, dtype=bool), keys, unit="questions")
    order = sorted(range(len(questions)), key=datasets.__getitem__)
    return ItemScores.of(np.asarray(correct, dtype=bool)[order], [keys[i] for i in order],
                         unit="questions",
                         strata=[(name, datasets.count(name)) for name in names])


def _question_key(q: dict[str, Any]) -> str:
    """What makes two questions the same item: the image and what was asked about it."""
    where = q.get("question_id") or f"{q['dataset']}/{q['split']}/{q['sample_id']}"
    return f"{where}\t{json.dumps([q['options'], int(q['answer_index'])], ensure_ascii=False)}"


def _label_names(questions: Sequence[dict[str, Any]]) -> list[str]:
    """Class names by label (from each question's answer text)."""
    n = max(int(q["label"]) for q in questions) + 1
    names = [f"class {i}" for i in range(n)]
    for q in questions:
        names[int(q["label"])] = q["options"][q["answer_index"]]
    return names


def _file_identity(path, n: int) -> dict[str, Any]:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": str(path), "sha256": digest, "n": n}


def _similarity_scores(model, questions, settings: ScoreSettings, *, weights, adapter,
                       cache_dir, kind: str, progress: bool):
    """Cosine of each question's cached image feature with each option's class embedding."""
    from featkit.classnames import resolve_templates
    from featkit.tasks.loading import FeatureSource
    from featkit.text_cache import TextSource, class_embeddings, lazy_tower
    from probes.zeroshot import l2_normalize

    source = FeatureSource(model, kind, weights=weights, adapter=adapter, cache_dir=cache_dir)
    scores: list[list[float]] = [[] for _ in questions]
    prov: dict[str, Any] = {"images": {}, "text": {}}
    tower = None
    for dataset, split in sorted({(q["dataset"], q["split"]) for q in questions}):
        fs = source.load(dataset, split)
        index = {sid: i for i, sid in enumerate(fs.sample_ids)}
        mine = [i for i, q in enumerate(questions) if (q["dataset"], q["split"]) == (dataset, split)]
        missing = [questions[i]["sample_id"] for i in mine if questions[i]["sample_id"] not in index]
        if missing:
            raise FeatkitError(f"{fs.path}: {len(missing)} question image(s) are not cached "
                               f"(e.g. {missing[0]}); extract {dataset}/{split} with {model}")
        names = sorted({o for i in mine for o in questions[i]["options"]})
        text_source = TextSource(model, weights=weights, adapter=adapter, cache_dir=cache_dir,
                                 device=settings.device, precision=settings.precision,
                                 weights_identity=fs.meta.get("weights"))
        tower = tower or lazy_tower(text_source)
        templates = resolve_templates(settings.templates, dataset)
        text = class_embeddings(text_source, dataset, names, templates, tower=tower,
                                progress=progress)
        row_of = {name: r for r, name in enumerate(names)}
        images = l2_normalize(fs.features[[index[questions[i]["sample_id"]] for i in mine]])
        for image, i in zip(images, mine):
            options = text.embeddings[[row_of[o] for o in questions[i]["options"]]]
            scores[i] = (options @ image).tolist()
        prov["images"][f"{dataset}/{split}"] = {"file": str(fs.path), "weights": fs.meta.get(
            "weights"), "kind": fs.kind}
        prov["text"][dataset] = text.provenance()
        prov["model_id"] = fs.model or model
    return scores, prov, kind


def _likelihood_scores(model, questions, folder: Path, settings: ScoreSettings, *, weights,
                       adapter, progress: bool):
    """Each option's (or letter's) log-likelihood under the VLM, the prefix run once."""
    from tqdm.auto import tqdm

    from extractors import load_extractor
    from extractors.option_scoring import OptionScorer
    from featkit._device import resolve_device
    from featkit.datasets.images import decode_image
    from probes.multiple_choice import LETTERS

    device = resolve_device(settings.device)
    extractor = load_extractor(model, weights=weights, adapter=adapter, device=device,
                               precision=settings.precision if device != "cpu" else "fp32")
    scorer = OptionScorer(extractor)
    scores, counts = [], []

    def item(q: dict[str, Any]):
        path = Path(q["image_path"])
        path = path if path.is_absolute() else folder / path
        try:
            image = decode_image(path)
        except (OSError, ValueError) as err:
            raise FeatkitError(f"question {q.get('question_id')}: cannot read {path} ({err})") from None
        targets = (list(q["options"]) if settings.target == "option"
                   else list(LETTERS[:len(q["options"])]))
        return image, q["prompt"], targets

    with tqdm(total=len(questions), desc="questions", unit="q", disable=not progress,
              leave=False) as bar:
        for start in range(0, len(questions), settings.batch_size):
            chunk = questions[start:start + settings.batch_size]
            for result in scorer.score_batch([item(q) for q in chunk]):
                scores.append(result.scores(settings.length_norm).tolist())
                counts.append(result.n_tokens.tolist())
            bar.update(len(chunk))
    prov = {"model_id": extractor.spec.name, "weights": extractor.weights_identity,
            "adapter": extractor.adapter_identity,
            "prompt_format": "chat template" if scorer.processor.chat_template
            else "'<image-token>\\n<question and options>\\nAnswer:'",
            "scoring": "sum of the option's token log-probabilities after the prompt and ' '"}
    return scores, counts, prov
