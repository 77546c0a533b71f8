"""Option log-likelihoods with the prefix's KV cache reused: equal to one full forward per
option, whichever side the options are padded on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from extractors import load_extractor
from extractors.option_scoring import OptionScorer
from featkit.errors import FeatkitError

OPTIONS = ["3", "seven", "1", "eight eight", "0"]
QUESTION = ("What type of digit is shown in the image?\n"
            + "\n".join(f"{letter}. {option}" for letter, option in zip("ABCDE", OPTIONS))
            + "\nAnswer with the option's letter from the given choices directly.")


#: one tiny model of every architecture the scorer supports
MODELS = ["test:tiny-llava", "test:tiny-qwen2vl", "test:tiny-llava-next",
          "test:tiny-llava-onevision", "test:tiny-internvl", "test:tiny-idefics3",
          "test:tiny-qwen2_5_vl", "test:tiny-qwen3_vl"]


@pytest.fixture(scope="module", params=MODELS)
def scorer(request):
    return OptionScorer(load_extractor(request.param))


def test_every_supported_architecture_is_tested():
    from extractors.option_scoring import SUPPORTED

    assert {load_extractor(m).arch.name for m in MODELS} == set(SUPPORTED)


def _image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(37, 41, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("options", [OPTIONS, list("ABCDE")])
def test_shared_prefix_equals_one_forward_per_option(scorer, options):
    for seed in range(2):
        shared = scorer.score(_image(seed), QUESTION, options)
        naive = scorer.score_naive(_image(seed), QUESTION, options)
        np.testing.assert_allclose(shared.logprob, naive.logprob, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(shared.n_tokens, naive.n_tokens)
        assert np.all(shared.logprob < 0)


def test_left_and_right_padding_give_the_same_scores(scorer):
    right = scorer.score(_image(3), QUESTION, OPTIONS, padding_side="right")
    left = scorer.score(_image(3), QUESTION, OPTIONS, padding_side="left")
    np.testing.assert_allclose(left.logprob, right.logprob, rtol=0, atol=1e-5)
    assert len(set(right.n_tokens.tolist())) > 1  # the options do need padding
    np.testing.assert_allclose(right.scores("token"), right.logprob / right.n_tokens)


def test_questions_batched_together_score_as_one_by_one(scorer):
    """Prefixes of different lengths left-padded into one forward, 5 and 3 options (an image
    of another shape: tiling models fall back to one question at a time)."""
    wide = Image.fromarray(np.random.default_rng(7).integers(0, 256, (20, 64, 3), dtype=np.uint8))
    questions = [(_image(4), QUESTION, OPTIONS), (wide, "Which digit? A. 1 B. 22 C. 3",
                                                 ["1", "22", "3"]),
                 (_image(6), QUESTION + " Be brief.", OPTIONS[::-1])]
    batched = scorer.score_batch(questions)
    for question, result in zip(questions, batched):
        alone = scorer.score_naive(*question)
        np.testing.assert_allclose(result.logprob, alone.logprob, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(result.n_tokens, alone.n_tokens)


def test_option_tokens_follow_the_prompt(scorer):
    prompt = scorer.prompt(QUESTION)
    assert prompt.startswith(scorer.extractor.image_token) and prompt.endswith("Answer:")
    ids, = scorer.option_ids(prompt, ["seven"])
    whole = scorer.tokenizer(f"{prompt} seven")["input_ids"]
    assert whole[-len(ids):] == ids  # the joint tokenization, prompt tokens removed
    assert scorer.tokenizer.decode(ids).replace(" ", "") == "seven"


def test_models_without_a_language_model_are_refused():
    with pytest.raises(FeatkitError, match="not a generative VLM"):
        OptionScorer(load_extractor("test:tiny-clip"))
    with pytest.raises(FeatkitError, match="PaliGemma models .* are not supported"):
        OptionScorer(load_extractor("test:tiny-paligemma"))
