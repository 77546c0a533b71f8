"""Multiple-choice questions from class labels, and their scores. Pure functions over arrays.

A question about an image of class ``y`` offers ``y`` and ``k - 1`` distractors, in an order
shuffled with a seeded generator. Distractors are the best-ranked wrong classes of a candidate
order, which depends on the source:

- ``clip``: the image's zero-shot scores, highest first (seed 002's hardest negatives);
- ``visual``: the classes whose mean image feature is most similar to the true class's;
- ``hierarchy``: the classes nearest in a class tree (siblings, then cousins, ...), ties in a
  seeded random order;
- ``random``: a seeded random order.

Score ties are broken towards the lower class index, as everywhere in the probes. Two classes
with the same (normalised) name never appear in one question: a candidate whose name id equals
the answer's or an earlier option's is skipped, so no question repeats an option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: rows sorted at a time when ranking zero-shot scores
SORT_BLOCK = 4096


@dataclass(frozen=True)
class Question:
    """``options``: class ids in the order shown; ``answer``: the index of the true class."""

    options: tuple[int, ...]
    answer: int

    @property
    def letter(self) -> str:
        return LETTERS[self.answer]


def _check_choices(choices: int, n_distinct: int) -> None:
    if choices < 2 or choices > len(LETTERS):
        raise FeatkitError(f"--choices must be between 2 and {len(LETTERS)}, got {choices}")
    if choices > n_distinct:
        raise FeatkitError(f"--choices {choices}: the dataset has only {n_distinct} distinct "
                           f"class names")


def pick_distractors(order: np.ndarray, answer: int, n: int, name_ids: np.ndarray) -> list[int]:
    """The first ``n`` classes of ``order`` (best candidate first) that are neither the answer
    nor share a name id with it or an earlier pick."""
    taken = {int(name_ids[answer])}
    picked = []
    for candidate in order:
        name = int(name_ids[candidate])
        if candidate == answer or name in taken:
            continue
        picked.append(int(candidate))
        taken.add(name)
        if len(picked) == n:
            return picked
    raise FeatkitError(f"only {len(picked)} distractors with distinct names for class {answer}")


def ranked_by_scores(scores: np.ndarray) -> Iterable[np.ndarray]:
    """Each row's classes by decreasing score, ties to the lower index (blocks of rows)."""
    for start in range(0, len(scores), SORT_BLOCK):
        yield from np.argsort(-scores[start:start + SORT_BLOCK], axis=1, kind="stable")


def class_mean_similarity(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` cosine similarity of the class means of L2-normalised features (a class
    without a sample has similarity -inf to every other)."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=n_classes)
    means = sums / np.maximum(counts, 1)[:, None]
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    similarity = means @ means.T
    similarity[counts == 0, :] = -np.inf
    similarity[:, counts == 0] = -np.inf
    return similarity


def tree_distances(ancestors: Sequence[Sequence[str]]) -> np.ndarray:
    """``(C, C)`` steps from class ``i`` up to its lowest common ancestor with ``j`` (1 for
    siblings, 2 for cousins...; a large number when they share none). ``ancestors[i]``: the
    class's ancestors, parent first."""
    big = 1 << 20
    depth_of = [{name: depth for depth, name in enumerate(chain, start=1)} for chain in ancestors]
    n = len(ancestors)
    out = np.full((n, n), big, dtype=np.int64)
    for i in range(n):
        for j in range(n):
            shared = [depth_of[i][a] for a in ancestors[j] if a in depth_of[i]]
            if shared:
                out[i, j] = min(shared)
    np.fill_diagonal(out, 0)
    return out


def ancestor_chains(class_names: Sequence[str], parents: Mapping[str, str]) -> list[list[str]]:
    """Each class's ancestors (parent first) from a child -> parent mapping; a cycle or a class
    that is not in the mapping is a one-line error."""
    missing = [c for c in class_names if c not in parents]
    if missing:
        raise FeatkitError(f"the hierarchy names no parent for {len(missing)} of "
                           f"{len(class_names)} classes (e.g. {missing[0]!r})")
    chains = []
    for name in class_names:
        chain, node = [], name
        while node in parents:
            node = parents[node]
            if node in chain or node == name:
                raise FeatkitError(f"the hierarchy has a cycle through {node!r}")
            chain.append(node)
        chains.append(chain)
    return chains


def build_questions(
    labels: np.ndarray,
    choices: int,
    source: str,
    *,
    seed: int,
    name_ids: np.ndarray,
    scores: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    distances: np.ndarray | None = None,
) -> list[Question]:
    """One question per label (image), ``choices`` options each, from ``source``: ``clip``
    (needs the images' ``scores``, N x C), ``visual`` (the classes' ``similarity``, C x C),
    ``hierarchy`` (the classes' tree ``distances``, C x C) or ``random``. ``name_ids``: an id
    per class, equal for classes whose names are the same."""
    labels = np.asarray(labels, dtype=np.int64)
    name_ids = np.asarray(name_ids, dtype=np.int64)
    n_classes = len(name_ids)
    _check_choices(choices, len(set(name_ids.tolist())))
    rng = np.random.default_rng(seed)
    if source == "clip":
        if scores is None or scores.shape != (len(labels), n_classes):
            raise ValueError(f"clip distractors need scores of shape {(len(labels), n_classes)}")
        orders: Iterable[np.ndarray] = ranked_by_scores(scores)
    elif source == "visual":
        if similarity is None:
            raise ValueError("visual distractors need the class similarity matrix")
        by_class = [np.argsort(-similarity[c], kind="stable") for c in range(n_classes)]
        orders = (by_class[y] for y in labels)
    elif source == "hierarchy":
        if distances is None:
            raise ValueError("hierarchy distractors need the class tree distances")
        orders = (np.lexsort((rng.random(n_classes), distances[y])) for y in labels)
    elif source == "random":
        orders = (rng.permutation(n_classes) for _ in labels)
    else:
        raise ValueError(f"unknown distractor source {source!r}")
    questions = []
    for y, order in zip(labels, orders):
        options = [int(y), *pick_distractors(order, int(y), choices - 1, name_ids)]
        shuffled = rng.permutation(choices)
        ordered = tuple(options[i] for i in shuffled)
        questions.append(Question(ordered, int(np.flatnonzero(shuffled == 0)[0])))
    return questions


@dataclass(frozen=True)
class MultipleChoiceResult:
    """Accuracy and mean per-class accuracy (fractions); ``predictions``: the chosen option of
    each question; ``chance``: the expected accuracy of guessing. In a record the accuracy is
    ``top1`` (the top-scored option is the answer), as for every classifier."""

    accuracy: float
    mean_per_class: float
    per_class: dict[str, float]
    chance: float
    n_questions: int
    predictions: np.ndarray
    correct: np.ndarray

    def metrics(self) -> dict[str, float]:
        return {"top1": self.accuracy, "mean_per_class": self.mean_per_class,
                "chance": self.chance}


def score_multiple_choice(
    option_scores: Sequence[Sequence[float]],
    answers: Sequence[int],
    labels: Sequence[int],
    class_names: Sequence[str],
) -> MultipleChoiceResult:
    """Score questions from each option's score (higher is better; ties to the first option):
    accuracy, and per-class accuracy over the true classes ``labels``."""
    if not (len(option_scores) == len(answers) == len(labels)):
        raise ValueError(f"{len(option_scores)} score rows, {len(answers)} answers and "
                         f"{len(labels)} labels")
    if not option_scores:
        raise FeatkitError("no questions to score")
    predictions = np.array([int(np.argmax(np.asarray(row, dtype=np.float64)))
                            for row in option_scores])
    answers = np.asarray(answers, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    correct = predictions == answers
    counts = np.bincount(labels, minlength=len(class_names))
    hits = np.bincount(labels, weights=correct, minlength=len(class_names))
    present = np.flatnonzero(counts)
    return MultipleChoiceResult(
        accuracy=float(correct.mean()),
        mean_per_class=float(np.mean(hits[present] / counts[present])),
        per_class={class_names[c]: float(hits[c] / counts[c]) for c in present},
        chance=float(np.mean([1.0 / len(row) for row in option_scores])),
        n_questions=len(answers),
        predictions=predictions,
        correct=correct,
    )
