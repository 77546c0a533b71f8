"""The class-name lists and template sets shipped as data, and their overrides."""

from __future__ import annotations

import json

import pytest

from featkit.classnames import (
    DEFAULT_TEMPLATES,
    builtin_class_lists,
    builtin_template_sets,
    clean_name,
    dataset_entry,
    question_noun,
    resolve_class_names,
    resolve_templates,
)
from featkit.errors import FeatkitError

#: the official class counts (reference.md section 3; ImageNet-1k)
COUNTS = {"cub": 200, "dogs": 120, "cars": 196, "aircraft": 100, "flowers": 102, "food": 101,
          "cifar100": 100, "imagenet": 1000, "digits": 10}


def test_every_builtin_dataset_has_a_list_of_the_official_size():
    assert set(COUNTS) <= set(builtin_class_lists())
    for dataset, count in COUNTS.items():
        entry = dataset_entry(dataset)
        assert len(entry.classes) == count, dataset
        assert entry.templates in builtin_template_sets() and entry.source and entry.noun
        assert all(name.strip() == name and name for name in entry.classes)


def test_template_sets_hold_one_placeholder_each():
    sets = {name: resolve_templates(name) for name in builtin_template_sets()}
    assert len(sets["openai_imagenet"].templates) == 80  # CLIP's ImageNet ensemble
    assert sets["simple"].templates == ("a photo of a {}.",)
    assert resolve_templates(None).name == DEFAULT_TEMPLATES
    for template_set in sets.values():
        assert all(t.count("{}") == 1 for t in template_set.templates), template_set.name
    assert resolve_templates("dataset", "flowers").prompts("rose") == [
        "a photo of a rose, a type of flower."]
    assert resolve_templates("dataset", "imagefolder").name == DEFAULT_TEMPLATES


def test_names_match_by_key_in_any_order():
    """CUB's cache names (``Black_footed_Albatross``) find the clean list by key; a shuffled
    cache order is followed, and so is a subset of the classes."""
    clean = dataset_entry("cub").classes
    raw = [name.replace(" ", "_") for name in clean][::-1]
    names = resolve_class_names("cub", raw)
    assert names.matched_by == "name" and names.names == tuple(clean[::-1])
    subset = resolve_class_names("cub", ["Laysan_Albatross", "Black_footed_Albatross"])
    assert subset.names == ("Laysan Albatross", "Black footed Albatross")


def test_renamed_lists_match_by_position():
    """CLIP renamed three flowers; torchvision's names still fit by position."""
    clean = list(dataset_entry("flowers").classes)
    raw = list(clean)
    raw[20] = "ball moss"
    names = resolve_class_names("flowers", raw)
    assert names.matched_by == "position" and names.verified == 101
    assert names.names == tuple(clean)
    with pytest.raises(FeatkitError, match="has 102 classes but the cached features have 3"):
        resolve_class_names("flowers", ["a", "b", "c"])


def test_datasets_without_a_list_clean_their_own_names():
    names = resolve_class_names("imagefolder", ["001.red_fox", "grey__wolf"])
    assert names.names == ("red fox", "grey wolf") and names.matched_by == "cleaned"
    assert clean_name("Black_footed_Albatross") == "Black footed Albatross"
    assert question_noun("cub") == "bird" and question_noun("imagefolder") == "object"


def test_overrides_from_files_and_lists(tmp_path):
    txt = tmp_path / "names.txt"
    txt.write_text("zero\none\n\n")
    assert resolve_class_names("digits", ["0", "1"], txt).names == ("zero", "one")
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"1": "one", "0": "zero"}))
    assert resolve_class_names("digits", ["0", "1"], mapping).names == ("zero", "one")
    with pytest.raises(FeatkitError, match="lists 2 names but digits has 3 classes"):
        resolve_class_names("digits", ["0", "1", "2"], txt)
    wnids = [f"n{i:08d}" for i in range(1000)]
    assert resolve_class_names("imagefolder", wnids, "imagenet").names[0] == "tench"
    with pytest.raises(FeatkitError, match="neither a file nor a built-in list"):
        resolve_class_names("digits", ["0"], "imagenett")


def test_template_files(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("a photo of a {c}.\nart of the {}.\n")
    assert resolve_templates(path).prompts("cat") == ["a photo of a cat.", "art of the cat."]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["no placeholder"]))
    with pytest.raises(FeatkitError, match="exactly one"):
        resolve_templates(bad)
    with pytest.raises(FeatkitError, match="did you mean simple"):
        resolve_templates("simpel")
