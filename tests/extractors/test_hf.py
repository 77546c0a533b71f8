"""The hf family on tiny random LLaVA / Qwen2-VL models built offline from configs.

References are computed independently of the adapter: vision tower hidden states and the projector
called directly, forward hooks on the PatchMerger and on the LM's input embeddings, and the
VLM2Vec-style LM-head forward (``output_hidden_states``) for last-token embeddings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.hf import (  # noqa: E402
    DEFAULT_INSTRUCTION,
    last_token_index,
    positions_from_mask,
    square_crop,
)
from extractors.tiny import tiny_model_dir  # noqa: E402
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError  # noqa: E402

TOL = 1e-6


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(20, 24), (24, 17), (16, 16), (30, 22), (18, 26)]
    return [
        Image.fromarray((rng.random((*sizes[i % len(sizes)], 3)) * 255).astype("uint8"))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def llava():
    return load_extractor("test:tiny-llava")


@pytest.fixture(scope="module")
def qwen():
    return load_extractor("test:tiny-qwen2vl")


def _batch(extractor, images):
    return torch.stack([extractor.transform(image) for image in images])


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def _lm_input_hook(extractor):
    """Capture the ``inputs_embeds`` the language model receives."""
    captured = {}

    def hook(module, args, kwargs):
        captured["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = extractor.base.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    return captured, handle


def _vlm2vec_reference(extractor, inputs) -> torch.Tensor:
    """What VLM2Vec does: the full model with the LM head and all hidden states, then the last
    real token (right padding) of ``hidden_states[-1]``, L2-normalised."""
    with torch.inference_mode():
        out = extractor.model(**inputs, output_hidden_states=True, use_cache=False)
    last = inputs["attention_mask"].sum(dim=1) - 1
    hidden = out.hidden_states[-1][torch.arange(len(last)), last]
    return torch.nn.functional.normalize(hidden.float(), dim=-1)


# -- registry and import hygiene -------------------------------------------------------------


def test_specs_and_aliases():
    spec = get_spec("test:tiny-llava")
    assert spec.kinds == {"visual": 32, "cls": 32, "aligned": 48, "last_token": 48}
    assert "cls" not in get_spec("test:tiny-qwen2vl").kinds
    assert get_spec("llava-1.5-7b").name == "hf:llava-hf/llava-1.5-7b-hf"
    assert get_spec("qwen2-vl-7b").name == "hf:Qwen/Qwen2-VL-7B-Instruct"
    generic = get_spec("hf:some-org/some-vlm")
    assert generic.family == "hf" and set(generic.kinds) == {"visual", "cls", "aligned", "last_token"}


def test_import_is_light():
    code = (
        "import sys, extractors.hf; "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- LLaVA: visual / cls / aligned -------------------------------------------------------------


def test_llava_features_match_tower_and_projector(llava):
    images = _images(4)
    pixels = _batch(llava, images)
    expected_pixels = llava.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert _max_diff(pixels, expected_pixels) == 0
    out = llava(pixels, ["visual", "cls", "aligned"])

    base = llava.base
    with torch.inference_mode():
        tower = base.vision_tower(pixels, output_hidden_states=True)
        layer = tower.hidden_states[-2]  # LLaVA default vision_feature_layer
        tokens = layer[:, 1:]  # "default" strategy drops CLS
        projected = base.multi_modal_projector(tokens)
    assert llava.model.config.vision_feature_layer == -2
    assert _max_diff(out["visual"], tokens.mean(1)) <= TOL
    assert _max_diff(out["cls"], layer[:, 0]) <= TOL
    assert _max_diff(out["aligned"], projected.mean(1)) <= TOL
    # not the last layer, and pooling happens after the projector
    assert _max_diff(out["visual"], tower.hidden_states[-1][:, 1:].mean(1)) > 1e-3
    with torch.inference_mode():
        assert _max_diff(out["aligned"], base.multi_modal_projector(tokens.mean(1))) > 1e-3


def test_llava_aligned_is_what_the_lm_receives(llava):
    images = _images(2, seed=1)
    inputs = llava.processor(text=[llava.prompt] * 2, images=images, return_tensors="pt")
    captured, handle = _lm_input_hook(llava)
    try:
        with torch.inference_mode():
            llava.base(**inputs, use_cache=False)
    finally:
        handle.remove()
    is_image = inputs["input_ids"] == llava.model.config.image_token_id
    lm_image_embeds = torch.stack([captured["inputs_embeds"][i][is_image[i]] for i in range(2)])
    out = llava(_batch(llava, images), ["aligned"])
    assert _max_diff(out["aligned"], lm_image_embeds.mean(1)) <= TOL


def test_batched_equals_one_by_one(llava, qwen):
    for extractor in (llava, qwen):
        images = _images(3, seed=2)
        kinds = list(extractor.kinds)
        batched = extractor(_batch(extractor, images), kinds)
        for i, image in enumerate(images):
            single = extractor(_batch(extractor, [image]), kinds)
            for kind in kinds:
                assert _max_diff(batched[kind][i], single[kind][0]) <= TOL, (extractor.spec.name, kind)


# -- Qwen2-VL: fixed-size input, visual / aligned --------------------------------------------------


def test_qwen_transform_is_fixed_size(qwen):
    images = _images(3, seed=3)
    assert qwen.image_size == 32
    pixels = _batch(qwen, images)  # different aspect ratios stack: same grid for every image
    assert pixels.shape == (3, 8 * 8, 3 * 2 * 4 * 4)
    reference = qwen.processor.image_processor(images=[square_crop(im, 32) for im in images], return_tensors="pt")
    assert reference["image_grid_thw"].tolist() == [[1, 8, 8]] * 3
    assert _max_diff(pixels.reshape(-1, pixels.shape[-1]), reference["pixel_values"]) == 0


def test_qwen_features_match_merger_and_lm_input(qwen):
    images = _images(2, seed=4)
    pixels = _batch(qwen, images)
    captured = {}

    def merger_hook(module, args, output):
        captured["merger_in"], captured["merger_out"] = args[0].detach().clone(), output.detach().clone()

    handle = qwen.base.visual.merger.register_forward_hook(merger_hook)
    try:
        out = qwen(pixels, ["visual", "aligned"])
    finally:
        handle.remove()
    assert _max_diff(out["visual"], captured["merger_in"].reshape(2, 64, -1).mean(1)) <= TOL
    assert _max_diff(out["aligned"], captured["merger_out"].reshape(2, 16, -1).mean(1)) <= TOL

    square = [square_crop(im, 32) for im in images]
    inputs = qwen.processor(text=[qwen.prompt] * 2, images=square, return_tensors="pt")
    lm_input, handle = _lm_input_hook(qwen)
    try:
        with torch.inference_mode():
            qwen.base(**inputs, use_cache=False)
    finally:
        handle.remove()
    is_image = inputs["input_ids"] == qwen.model.config.image_token_id
    lm_image_embeds = torch.stack([lm_input["inputs_embeds"][i][is_image[i]] for i in range(2)])
    assert lm_image_embeds.shape[1] == 16
    assert _max_diff(out["aligned"], lm_image_embeds.mean(1)) <= TOL


def test_qwen_has_no_cls(qwen):
    with pytest.raises(UnknownNameError, match="cls"):
        qwen(_batch(qwen, _images(1)), ["cls"])


def test_qwen_image_size_must_fit_the_grid():
    with pytest.raises(FeatkitError, match="multiple of 8"):
        load_extractor("test:tiny-qwen2vl", options={"image_size": 30})


# -- last_token ----------------------------------------------------------------------------------


def test_mask_helpers():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [4, 2, 4]
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("name", ["llava", "qwen"])
def test_last_token_matches_lm_head_forward(name, llava, qwen):
    extractor = {"llava": llava, "qwen": qwen}[name]
    images = _images(3, seed=5)
    if name == "qwen":
        images = [square_crop(im, 32) for im in images]
    pipeline = extractor(_batch(extractor, images), ["last_token"])["last_token"]
    inputs = extractor.processor(text=[extractor.prompt] * 3, images=images, return_tensors="pt")
    reference = _vlm2vec_reference(extractor, inputs)
    assert _max_diff(pipeline, reference) <= TOL
    assert torch.allclose(pipeline.norm(dim=1), torch.ones(3))
    assert extractor.prompt == f"{extractor.image_token} {DEFAULT_INSTRUCTION}"


@pytest.mark.parametrize("name", ["llava", "qwen"])
def test_last_token_left_right_padding_and_batching(name, llava, qwen):
    extractor = {"llava": llava, "qwen": qwen}[name]
    images = _images(3, seed=6)
    token = extractor.image_token
    prompts = [f"{token} Represent the given image.", f"{token} Find a photo of this bird species, please.", f"{token} A."]
    tokenizer = extractor.processor.tokenizer
    results = {}
    for side in ("left", "right"):
        tokenizer.padding_side = side
        try:
            inputs = extractor.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = "right"
        assert (inputs["attention_mask"] == 0).any()
        results[side] = extractor.last_token(inputs)
    assert _max_diff(results["left"], results["right"]) <= TOL
    for i in range(3):
        single = extractor.processor(text=[prompts[i]], images=[images[i]], return_tensors="pt")
        assert _max_diff(extractor.last_token(single)[0], results["left"][i]) <= TOL
    # the vectors depend on the instruction
    assert _max_diff(results["left"][0], results["left"][1]) > 1e-3


def test_instruction_option_changes_last_token_and_key():
    default = load_extractor("test:tiny-llava")
    custom = load_extractor("test:tiny-llava", options={"instruction": "Represent the bird species."})
    assert custom.prompt == "<image> Represent the bird species."
    assert custom.key_settings()["instruction"] != default.key_settings()["instruction"]
    pixels = _batch(default, _images(2))
    a, b = default(pixels, ["aligned", "last_token"]), custom(pixels, ["aligned", "last_token"])
    assert _max_diff(a["aligned"], b["aligned"]) == 0
    assert _max_diff(a["last_token"], b["last_token"]) > 1e-3


def test_text_embeddings_padding_and_batching(llava, qwen):
    texts = ["a bird", "a photo of a great crested flycatcher", "dog", "the object species is cat."]
    for extractor in (llava, qwen):
        tokenizer = extractor.processor.tokenizer
        batched = extractor.embed_texts(texts, batch_size=4)
        tokenizer.padding_side = "left"
        try:
            left = extractor.embed_texts(texts, batch_size=4)
        finally:
            tokenizer.padding_side = "right"
        single = np.stack([extractor.embed_texts([t])[0] for t in texts])
        assert np.abs(batched - left).max() <= TOL
        assert np.abs(batched - single).max() <= TOL
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)
        assert np.abs(batched[0] - batched[2]).max() > 1e-3
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        reference = _vlm2vec_reference(extractor, dict(enc))
        assert np.abs(batched - reference.numpy()).max() <= TOL
        with_instruction = extractor.embed_texts(["a bird"], instruction="Find me an image of:")
        assert np.abs(with_instruction[0] - extractor.embed_texts(["Find me an image of: a bird"])[0]).max() == 0


# -- adapters ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory):
    """A random LoRA adapter on the tiny LLaVA (LM attention + projector) and the merged model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root = tmp_path_factory.mktemp("adapter")
    base_dir = tiny_model_dir("test:tiny-llava")
    torch.manual_seed(1)
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "linear_1"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(root / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(root / "merged")
    AutoProcessor.from_pretrained(base_dir).save_pretrained(root / "merged")
    return root / "adapter", root / "merged"


def test_adapter_equals_merged_model(adapter_dirs, llava):
    adapter, merged = adapter_dirs
    pixels = _batch(llava, _images(3, seed=7))
    kinds = ["visual", "aligned", "last_token"]
    with_adapter = load_extractor("test:tiny-llava", adapter=adapter)
    full = load_extractor("test:tiny-llava", weights=str(merged))
    a, b, base = with_adapter(pixels, kinds), full(pixels, kinds), llava(pixels, kinds)
    for kind in kinds:
        assert _max_diff(a[kind], b[kind]) <= 1e-5, kind
    assert _max_diff(a["last_token"], base["last_token"]) > 1e-3
    assert _max_diff(a["visual"], base["visual"]) > 1e-3  # q_proj/v_proj match the CLIP tower too
    texts = ["a bird", "a photo of a dog"]
    assert np.abs(with_adapter.embed_texts(texts) - full.embed_texts(texts)).max() <= 1e-5
    assert with_adapter.key_settings()["adapter"].startswith("sha256:")
    assert llava.key_settings()["adapter"] is None
    assert full.weights_identity.startswith("sha256:") and llava.weights_identity == "random:seed0"


def test_adapter_that_does_not_fit_is_refused(adapter_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter, _ = adapter_dirs
    moved = tmp_path / "moved"
    shutil.copytree(adapter, moved)
    state = load_file(moved / "adapter_model.safetensors")
    save_file({k.replace("layers.0.", "layers.7."): v for k, v in state.items()}, moved / "adapter_model.safetensors")
    with pytest.raises(MissingWeightsError, match="do not match"):
        load_extractor("test:tiny-llava", adapter=moved)
    with pytest.raises(MissingWeightsError, match="adapter_config.json"):
        load_extractor("test:tiny-llava", adapter=tmp_path)


def test_adapter_features_are_cached_under_the_adapter(adapter_dirs, tmp_path):
    import featkit
    from featkit.errors import CacheError

    adapter, _ = adapter_dirs
    featkit.extract("test:tiny-llava", "digits", splits=("val",), features=["last_token"], adapter=adapter,
                    cache_dir=tmp_path, progress=False, num_workers=0)
    fs = featkit.load("test:tiny-llava", "digits", "val", "last_token", cache_dir=tmp_path, adapter=adapter)
    assert fs.features.shape == (136, 48)
    with pytest.raises(CacheError):
        featkit.load("test:tiny-llava", "digits", "val", "last_token", cache_dir=tmp_path)


def test_adapter_only_directory_loads_its_base(adapter_dirs):
    adapter, merged = adapter_dirs
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir("test:tiny-llava"))
    via_dir = load_extractor(f"hf:{adapter}")
    full = load_extractor(f"hf:{merged}")
    pixels = _batch(full, _images(2))
    assert _max_diff(via_dir(pixels, ["last_token"])["last_token"], full(pixels, ["last_token"])["last_token"]) <= 1e-5
    assert via_dir.adapter_identity.startswith("sha256:")


# -- weights: offline, never random --------------------------------------------------------------


def test_missing_hub_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        load_extractor("hf:featkit-test/not-a-cached-model")
    message = str(err.value)
    assert "\n" not in message and "not in the Hugging Face cache" in message and "--weights" in message
    with pytest.raises(MissingWeightsError, match="not a directory"):
        load_extractor("llava-1.5-7b", weights=str(tmp_path / "nope"))
    assert not get_spec("llava-1.5-7b").name.startswith("test:")


def test_incomplete_checkpoint_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("test:tiny-llava"), broken)
    state = load_file(broken / "model.safetensors")
    dropped = next(k for k in state if "multi_modal_projector" in k)
    del state[dropped]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match="missing from the checkpoint"):
        load_extractor(f"hf:{broken}")
    (broken / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError):
        load_extractor(f"hf:{broken}")


def test_unsupported_architecture(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=8, patch_size=4)).save_pretrained(tmp_path)
    with pytest.raises(UnknownNameError, match="supports LlavaForConditionalGeneration"):
        load_extractor(f"hf:{tmp_path}")


def test_old_transformers_fails_clearly(monkeypatch):
    import importlib.metadata as md

    real = md.version
    monkeypatch.setattr(md, "version", lambda name: "4.52.4" if name == "transformers" else real(name))
    with pytest.raises(FeatkitError, match=r"transformers>=5\.0 \(installed 4\.52\.4"):
        load_extractor("test:tiny-llava")


# -- through the pipeline ------------------------------------------------------------------------


def test_pipeline_extracts_all_kinds(tmp_path):
    import featkit
    from featkit.datasets import open_dataset

    for model in ("test:tiny-llava", "test:tiny-qwen2vl"):
        spec = get_spec(model)
        featkit.extract(model, "digits", splits=("val",), features=list(spec.kinds), cache_dir=tmp_path,
                        progress=False, num_workers=0, batch_size=50,
                        options={"instruction": "Represent the digit."})
        extractor = load_extractor(model, options={"instruction": "Represent the digit."})
        dataset = open_dataset("digits", None)
        samples = dataset.samples("val")[:5]
        pixels = _batch(extractor, [dataset.load_image(s) for s in samples])
        direct = extractor(pixels, list(spec.kinds))
        for kind, dim in spec.kinds.items():
            fs = featkit.load(model, "digits", "val", kind, cache_dir=tmp_path)
            assert fs.features.shape == (136, dim) and np.isfinite(fs.features).all()
            assert np.abs(fs.features[:5] - direct[kind].numpy()).max() <= 1e-5, (model, kind)
        assert fs.meta["settings"]["instruction"] == "Represent the digit."
