"""Multiple-choice questions: the distractors each source promises, well-formed questions, and
their scores."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.multiple_choice import (
    ancestor_chains,
    build_questions,
    class_mean_similarity,
    score_multiple_choice,
    tree_distances,
)

N_CLASSES = 12


def _well_formed(questions, labels, choices):
    for question, label in zip(questions, labels):
        assert len(question.options) == choices
        assert len(set(question.options)) == choices  # no option repeated
        assert question.options[question.answer] == label  # the answer is there


@pytest.mark.parametrize("choices", [2, 5])
def test_clip_distractors_are_exactly_the_top_wrong_classes(choices):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(400, N_CLASSES)).astype(np.float32)  # with ties
    labels = rng.integers(0, N_CLASSES, size=400)
    questions = build_questions(labels, choices, "clip", seed=1, scores=scores,
                                name_ids=np.arange(N_CLASSES))
    _well_formed(questions, labels, choices)
    for question, row, label in zip(questions, scores, labels):
        wrong = [c for c in np.argsort(-row, kind="stable") if c != label][:choices - 1]
        assert set(question.options) - {label} == set(wrong)


def test_classes_sharing_a_name_never_meet_in_one_question():
    """CLIP's ImageNet list names two classes 'missile': a question shows at most one."""
    rng = np.random.default_rng(1)
    name_ids = np.array([0, 1, 2, 3, 1, 5, 6, 2, 8, 9, 10, 11])  # 1 and 4, 2 and 7 share names
    labels = rng.integers(0, N_CLASSES, size=300)
    scores = rng.normal(size=(300, N_CLASSES))
    for source in ("clip", "random"):
        questions = build_questions(labels, 5, source, seed=0, scores=scores, name_ids=name_ids)
        _well_formed(questions, labels, 5)
        for question in questions:
            assert len({name_ids[c] for c in question.options}) == 5


def test_the_answer_position_is_shuffled_with_the_seed():
    labels = np.repeat(np.arange(N_CLASSES), 50)
    first = build_questions(labels, 5, "random", seed=3, name_ids=np.arange(N_CLASSES))
    again = build_questions(labels, 5, "random", seed=3, name_ids=np.arange(N_CLASSES))
    other = build_questions(labels, 5, "random", seed=4, name_ids=np.arange(N_CLASSES))
    assert first == again and first != other
    positions = np.bincount([q.answer for q in first], minlength=5)
    assert positions.min() > 0.12 * len(labels)  # every letter is the answer about 1/5 of the time
    _well_formed(first, labels, 5)


def test_visual_distractors_are_the_nearest_class_means():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(N_CLASSES, 6))
    train_labels = np.repeat(np.arange(N_CLASSES), 5)
    train = centres[train_labels] + 0.1 * rng.normal(size=(len(train_labels), 6))
    similarity = class_mean_similarity(train, train_labels, N_CLASSES)
    normed = train / np.linalg.norm(train, axis=1, keepdims=True)
    means = np.stack([normed[train_labels == c].mean(axis=0) for c in range(N_CLASSES)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(similarity, means @ means.T, atol=1e-12)
    labels = np.arange(N_CLASSES)
    questions = build_questions(labels, 4, "visual", seed=0, similarity=similarity,
                                name_ids=np.arange(N_CLASSES))
    for question, label in zip(questions, labels):
        nearest = [c for c in np.argsort(-similarity[label], kind="stable") if c != label][:3]
        assert set(question.options) - {label} == set(nearest)


def test_hierarchy_distractors_are_siblings_first():
    names = [f"c{i}" for i in range(8)]
    parents = {"c0": "a", "c1": "a", "c2": "a", "c3": "b", "c4": "b", "c5": "b", "c6": "d",
               "c7": "d", "a": "ab", "b": "ab", "d": "root", "ab": "root"}
    chains = ancestor_chains(names, parents)
    assert chains[0] == ["a", "ab", "root"]
    distances = tree_distances(chains)
    assert distances[0, 1] == 1 and distances[0, 3] == 2 and distances[0, 6] == 3
    labels = np.zeros(40, dtype=int)
    questions = build_questions(labels, 3, "hierarchy", seed=0, distances=distances,
                                name_ids=np.arange(8))
    assert all(set(q.options) == {0, 1, 2} for q in questions)  # the two siblings
    wider = build_questions(labels, 4, "hierarchy", seed=0, distances=distances,
                            name_ids=np.arange(8))
    cousins = {next(iter(set(q.options) - {0, 1, 2})) for q in wider}
    assert cousins == {3, 4, 5}  # then a cousin, chosen at random
    with pytest.raises(FeatkitError, match="no parent for 1 of 8"):
        ancestor_chains(names, {k: v for k, v in parents.items() if k != "c7"})
    with pytest.raises(FeatkitError, match="cycle"):
        ancestor_chains(["x"], {"x": "y", "y": "x"})


def test_scores_accuracy_mean_per_class_and_chance():
    scores = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.3, 0.2], [0.0, 1.0]]
    result = score_multiple_choice(scores, answers=[1, 1, 0, 1], labels=[0, 0, 1, 1],
                                   class_names=["a", "b"])
    assert result.predictions.tolist() == [1, 0, 0, 1]  # a tie goes to the first option
    assert result.accuracy == 0.75 and result.per_class == {"a": 0.5, "b": 1.0}
    assert result.mean_per_class == 0.75
    assert result.chance == pytest.approx((0.5 * 3 + 1 / 3) / 4)
    with pytest.raises(FeatkitError, match="--choices 6: the dataset has only 5"):
        build_questions(np.zeros(3, int), 6, "random", seed=0, name_ids=np.arange(5))
