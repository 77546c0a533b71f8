"""Declared extractor options: parsing by type, one-line errors that list what is accepted, the
tiny models declaring their family's options, and features-changing options in the cache key."""

from __future__ import annotations

import pytest

import extractors
from extractors import check_options, get_spec, load_extractor
from extractors.base import OptionSpec
from featkit.errors import FeatkitError


def _one_line(info: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("kind, text, value", [
    (int, "64", 64), (int, " 7 ", 7), (float, "0.5", 0.5), (float, "2", 2.0), (str, " a b ", " a b "),
    (bool, "yes", True), (bool, "False", False), (bool, "0", False),
])
def test_strings_from_the_command_line_parse_by_the_declared_type(kind, text, value):
    parsed = OptionSpec("x", kind).parse(text, "m", "x")
    assert parsed == value and type(parsed) is kind


@pytest.mark.parametrize("kind, value", [
    (int, "abc"), (int, "4.5"), (int, ""), (int, 4.0), (int, True), (float, "fast"), (bool, "maybe"),
    (bool, 1), (str, 3),
])
def test_values_of_another_type_are_one_line_errors(kind, value):
    with pytest.raises(FeatkitError, match="expected") as info:
        OptionSpec("x", kind).parse(value, "m", "x (int)")
    _one_line(info, "option x=", "m accepts x (int)")


def test_python_values_and_the_default():
    option = OptionSpec("size", int, 32)
    assert option.parse(48, "m", "") == 48 and option.parse(None, "m", "") == 32
    assert OptionSpec("r", float).parse(3, "m", "") == 3.0
    assert option.describe() == "size (int, default 32)"


def test_every_declared_option_comes_back_parsed_or_at_its_default():
    assert check_options("test:tiny-qwen2vl") == {"instruction": "Represent the given image.",
                                                  "trust_remote_code": False, "vlm2vec": "auto",
                                                  "image_size": 32}
    assert check_options("test:tiny-qwen2vl", {"image_size": "16"})["image_size"] == 16
    assert check_options("test:tiny-clip") == {}
    assert check_options("test:tiny-dinov2", {"image_size": "28"}) == {"image_size": 28}


def test_unknown_option_suggests_the_declared_one():
    with pytest.raises(FeatkitError) as info:
        load_extractor("test:tiny-qwen2vl", options={"image_sise": "64"})
    _one_line(info, "unknown option 'image_sise'", "did you mean image_size?", "instruction (str")


def test_model_without_options_says_so():
    with pytest.raises(FeatkitError) as info:
        load_extractor("test:tiny-clip", options={"image_size": "64"})
    _one_line(info, "unknown option 'image_size' for test:tiny-clip", "accepts no options")


def test_wrong_type_lists_what_is_accepted():
    with pytest.raises(FeatkitError) as info:
        load_extractor("test:tiny-qwen2vl", options={"image_size": "abc"})
    _one_line(info, "option image_size='abc'", "expected an integer", "image_size (int, default 32)")


def test_adapter_for_a_model_that_cannot_apply_one(tmp_path):
    with pytest.raises(FeatkitError) as info:
        load_extractor("test:tiny-clip", adapter=tmp_path)
    _one_line(info, f"--adapter {tmp_path}", "test:tiny-clip cannot apply an adapter", "the hf family",
              "test:tiny-llava")


def test_llava_refuses_the_qwen_only_image_size():
    pytest.importorskip("transformers")
    with pytest.raises(FeatkitError) as info:
        load_extractor("test:tiny-llava", options={"image_size": 64})
    _one_line(info, "option image_size=64", "LLaVA")


def test_tiny_models_declare_the_options_of_the_family_they_mimic():
    families = extractors.families()
    tiny = families["test"]
    mimics = {"test:tiny-clip": "open_clip", "test:tiny-eva": "open_clip", "test:tiny-siglip": "open_clip",
              "test:tiny-dinov2": "timm", "test:tiny-llava": "hf", "test:tiny-qwen2vl": "hf"}
    for model, family_name in mimics.items():
        spec, family = get_spec(model), families[family_name]
        assert [o.name for o in tiny.options_for(spec)] == [o.name for o in family.options], model
        assert tiny.accepts_adapter_for(spec) is family.accepts_adapter, model
    assert not families["pixels"].options and not families["pixels"].accepts_adapter
    assert "test:tiny-llava" in extractors.adapter_models() and "the hf family" in extractors.adapter_models()


def _key(extractor) -> tuple:
    return (extractor.weights_identity, repr(extractor.preprocessing), repr(extractor.key_settings()))


@pytest.mark.parametrize("model, option, value", [
    ("test:tiny-dinov2", "image_size", "28"),
    ("test:tiny-qwen2vl", "image_size", "16"),
    ("test:tiny-llava", "instruction", "Represent the digit."),
])
def test_options_that_change_features_change_the_key_and_the_features(model, option, value):
    if model != "test:tiny-dinov2":
        pytest.importorskip("transformers")
    import numpy as np
    import torch
    from PIL import Image

    family = extractors.families()[get_spec(model).family]
    declared = {o.name: o for o in family.options_for(get_spec(model))}
    assert declared[option].changes_features
    plain, changed = load_extractor(model), load_extractor(model, options={option: value})
    assert _key(plain) != _key(changed)
    assert _key(load_extractor(model)) == _key(plain)  # the same inputs, the same key
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    kind = "last_token" if "last_token" in plain.kinds else "visual"
    with torch.no_grad():
        a = plain(torch.stack([plain.transform(picture)]), [kind])[kind]
        b = changed(torch.stack([changed.transform(picture)]), [kind])[kind]
    assert a.shape != b.shape or float((a - b).abs().max()) > 1e-4
