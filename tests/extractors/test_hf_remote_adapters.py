"""The shipped remote-code adapters (extractors/hf_remote_adapters.py) on tiny models written in
the layout of each real model's code (tests/extractors/remote_code/): refused without
trust_remote_code, every kind equal to the model's own calls, padding- and batch-independent,
a checkpoint missing a tensor refused in one line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import load_extractor  # noqa: E402
from extractors.tiny_vlms import CHARACTERS, char_tokenizer  # noqa: E402
from featkit.errors import FeatkitError, MissingWeightsError  # noqa: E402

CODE = Path(__file__).parent / "remote_code"
TRUSTED = {"trust_remote_code": True}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, CODE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _save(root: Path, module, model_class: str, config, tokenizer, auto_class: str) -> Path:
    getattr(module, type(config).__name__).register_for_auto_class()
    getattr(module, model_class).register_for_auto_class(auto_class)
    torch.manual_seed(0)
    model = getattr(module, model_class)(config).eval()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def _vocab(specials: list[str], tail: dict[str, int] | None = None) -> dict[str, int]:
    tokens = specials + [c for c in CHARACTERS if c not in specials]
    vocab = {token: index for index, token in enumerate(tokens)}
    vocab.update(tail or {})
    return vocab


def _llama(vocab: dict[str, int], **extra) -> dict:
    return {"vocab_size": max(vocab.values()) + 1, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "pad_token_id": vocab["<pad>"], **extra}


def build_internvl(root: Path) -> Path:
    module = _module("tiny_internvl_chat")
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<img>", "</img>", "<IMG_CONTEXT>"]
    vocab = _vocab(specials)
    config = module.InternVLChatConfig(
        vision_config={"image_size": 32, "patch_size": 4, "hidden_size": 16,
                       "num_attention_heads": 2, "num_hidden_layers": 3},
        llm_config=_llama(vocab), select_layer=-2, downsample_ratio=0.5, ps_version="v2")
    tokenizer = char_tokenizer(vocab, bos="<s>", pad_token="<pad>", bos_token="<s>",
                                eos_token="</s>", extra_special_tokens=specials[4:])
    return _save(root, module, "InternVLChatModel", config, tokenizer, "AutoModel")


QWEN_START = 300


def build_qwen(root: Path, **precision_flags: bool) -> Path:
    module = _module("tiny_qwen_vl")
    tags = {"<img>": QWEN_START, "</img>": QWEN_START + 1, "<imgpad>": QWEN_START + 2}
    vocab = _vocab(["<|endoftext|>", "<unk>"], tags)
    config = module.QWenConfig(vocab_size=QWEN_START + 8, visual={
        "image_size": 28, "patch_size": 7, "width": 16, "layers": 2, "heads": 2,
        "n_queries": 16, "output_dim": 32, "image_start_id": QWEN_START}, **precision_flags)
    tokenizer = char_tokenizer(vocab, bos=None, pad_token="<|endoftext|>",
                                extra_special_tokens=list(tags))
    return _save(root, module, "QWenLMHeadModel", config, tokenizer, "AutoModelForCausalLM")


def build_cogvlm2(root: Path) -> Path:
    module = _module("tiny_cogvlm2")
    # Llama-3's tokenizer names no pad token; CogVLM2's code pads with its reserved token 0
    vocab = _vocab(["<|reserved_special_token_0|>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>"])
    config = module.CogVLMConfig(vocab_size=len(vocab), vision_config={
        "image_size": 28, "patch_size": 7, "hidden_size": 16, "num_heads": 2,
        "num_hidden_layers": 2})
    tokenizer = char_tokenizer(vocab, bos="<|begin_of_text|>", bos_token="<|begin_of_text|>",
                                eos_token="<|end_of_text|>",
                                extra_special_tokens=["<|reserved_special_token_0|>"])
    assert tokenizer.pad_token_id is None
    return _save(root, module, "CogVLMForCausalLM", config, tokenizer, "AutoModelForCausalLM")


def build_phi3_v(root: Path) -> Path:
    module = _module("tiny_phi3_v")
    vocab = _vocab(["<unk>", "<s>", "</s>", "<|endoftext|>"])
    config = module.Phi3VConfig(vocab_size=len(vocab))
    tokenizer = char_tokenizer(vocab, bos="<s>", pad_token="<|endoftext|>", bos_token="<s>",
                                eos_token="</s>")
    root = _save(root, module, "Phi3VForCausalLM", config, tokenizer, "AutoModelForCausalLM")
    (root / "preprocessor_config.json").write_text(json.dumps({"num_crops": 4}))
    return root


BUILDERS = {"internvl_chat": build_internvl, "qwen": build_qwen, "cogvlm2": build_cogvlm2,
            "phi3_v": build_phi3_v}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``kind -> checkpoint directory``, each tiny model built once for the module."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = BUILDERS[kind](tmp_path_factory.mktemp(kind) / "tiny")
        return cache[kind]

    return get


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, built):
    return request.param, built(request.param)


@pytest.fixture(scope="module")
def phi3_v(built):
    return "phi3_v", built("phi3_v")


@pytest.fixture(scope="module")
def internvl_chat(built):
    return "internvl_chat", built("internvl_chat")


@pytest.fixture(scope="module")
def qwen(built):
    return "qwen", built("qwen")


@pytest.fixture(scope="module")
def cogvlm2(built):
    return "cogvlm2", built("cogvlm2")


@pytest.fixture(scope="module")
def vlm(checkpoint):
    return checkpoint[0], load_extractor(f"hf:{checkpoint[1]}", options=TRUSTED)


def _images(n: int = 3):
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((30 + 3 * i, 26, 3)) * 255).astype("uint8")) for i in range(n)]


def _close(a, b, tol: float = 1e-5) -> bool:
    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max()) <= tol


def test_refused_without_trust_remote_code(checkpoint):
    with pytest.raises(FeatkitError, match="--trust-remote-code") as err:
        load_extractor(f"hf:{checkpoint[1]}")
    assert "\n" not in str(err.value)


def _own_calls(kind: str, model, pixels):
    """(visual tokens, aligned tokens) from the tiny model's own methods."""
    if kind == "internvl_chat":
        out = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[model.config.select_layer][:, 1:], model.extract_feature(pixels)
    if kind == "qwen":
        visual = model.transformer.visual
        x = visual.conv1(pixels).flatten(2).permute(0, 2, 1)
        x = visual.ln_pre(x + visual.positional_embedding)
        tokens = visual.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return tokens, visual(pixels)
    if kind == "cogvlm2":
        vision = model.model.vision
        return vision.transformer(vision.patch_embedding(pixels))[:, 1:], vision(pixels)
    if kind == "phi3_v":
        embedding = model.model.vision_embed_tokens
        tokens = embedding.img_processor(pixels.flatten(0, 1), output_hidden_states=True).hidden_states[-2][:, 1:]
        ids = -torch.ones(len(pixels), vlm_tokens(pixels), dtype=torch.long)
        sizes = torch.tensor([[672, 672]] * len(pixels))
        return tokens.reshape(len(pixels), -1, tokens.shape[-1]), embedding(ids, pixels, sizes)
    raise AssertionError(kind)


def vlm_tokens(pixels) -> int:
    """Phi-3-V's image token count for a square HD image of g x g crops (its processor's formula)."""
    grid = int((pixels.shape[1] - 1) ** 0.5)
    return (grid * grid + 1) * 144 + 1 + (grid + 1) * 12


def test_visual_and_aligned_are_the_models_own(vlm):
    kind, vlm = vlm
    pixels = torch.stack([vlm.transform(im) for im in _images()])
    out = vlm(pixels, ["visual", "aligned"])
    with torch.inference_mode():
        tokens, aligned = _own_calls(kind, vlm.model, pixels)
    assert _close(out["visual"], tokens.mean(1)) and _close(out["aligned"], aligned.mean(1))
    assert vlm.n_image_tokens == aligned.shape[1]


def _own_last_token(kind: str, vlm, images, tmp_path) -> torch.Tensor:
    """The last-token state of the model's own multimodal forward on the same prompt."""
    model = vlm.model
    if kind == "internvl_chat":
        pixels = torch.stack([vlm.transform(im) for im in images])
        ids = vlm.image_prompt(len(images)).input_ids
        embeds = model.language_model.get_input_embeddings()(ids).clone()
        embeds[ids == vlm.image_token_id] = model.extract_feature(pixels).reshape(-1, embeds.shape[-1])
        hidden = model.language_model.model(inputs_embeds=embeds).last_hidden_state
    elif kind == "qwen":
        rows = []
        for index, image in enumerate(images):
            path = f"{index}.png"  # relative (the test runs in tmp_path): it fits in 16 ids
            image.save(tmp_path / path)
            ids = vlm.image_prompt(1).input_ids[0].tolist()
            start = ids.index(QWEN_START)
            name = list(str(path).encode())
            assert len(name) < vlm.n_image_tokens
            ids[start + 1:start + 1 + len(name)] = name
            rows.append(ids)
        hidden = model.transformer(input_ids=torch.tensor(rows)).last_hidden_state
    elif kind == "cogvlm2":
        pixels = [[vlm.transform(im)] for im in images]
        prompt = vlm.image_prompt(len(images))
        hidden = model.model(input_ids=prompt.input_ids, images=pixels,
                             token_type_ids=prompt.image_mask.long(),
                             attention_mask=prompt.attention_mask).last_hidden_state
    elif kind == "phi3_v":
        pixels = torch.stack([vlm.transform(im) for im in images])
        prompt = vlm.image_prompt(len(images))
        ids = prompt.input_ids.masked_fill(prompt.image_mask, -1)
        hidden = model.model(input_ids=ids, pixel_values=pixels, image_sizes=[[672, 672]] * len(images),
                             attention_mask=prompt.attention_mask).last_hidden_state
    return torch.nn.functional.normalize(hidden[:, -1], dim=-1)


def test_last_token_is_the_models_own_forward(vlm, tmp_path, monkeypatch):
    kind, vlm = vlm
    monkeypatch.chdir(tmp_path)
    images = _images(2)
    pixels = torch.stack([vlm.transform(im) for im in images])
    if kind == "qwen":
        # Qwen-VL's forward reads the PNG itself; the PNG round trip is lossless
        images = [Image.fromarray(np.asarray(im)) for im in images]
    out = vlm(pixels, ["last_token"])["last_token"]
    with torch.inference_mode():
        reference = _own_last_token(kind, vlm, images, tmp_path)
    assert _close(out, reference)


def test_batched_equals_one_at_a_time(vlm):
    _, vlm = vlm
    pixels = torch.stack([vlm.transform(im) for im in _images()])
    kinds = ["visual", "aligned", "last_token"]
    batch = vlm(pixels, kinds)
    for index in range(len(pixels)):
        single = vlm(pixels[index:index + 1], kinds)
        assert all(_close(batch[k][index], single[k][0]) for k in kinds)
    texts = vlm.embed_texts(["a bird", "a photo of a small dog"])
    assert np.abs(texts[1] - vlm.embed_texts(["a photo of a small dog"])[0]).max() <= 1e-5


def test_left_and_right_padding_give_the_same_last_token(vlm):
    _, vlm = vlm
    texts = ["a bird", "a photo of a small dog"]
    side = vlm.tokenizer.padding_side
    try:
        vlm.tokenizer.padding_side = "left"
        left = vlm.embed_texts(texts)
        vlm.tokenizer.padding_side = "right"
        right = vlm.embed_texts(texts)
    finally:
        vlm.tokenizer.padding_side = side
    assert np.abs(left - right).max() <= 1e-5
    assert np.abs(left[0] - left[1]).max() > 1e-3


def test_a_missing_tensor_is_one_line(checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint[1], broken)
    weights = load_file(broken / "model.safetensors")
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match="missing") as err:
        load_extractor(f"hf:{broken}", options=TRUSTED)
    assert "\n" not in str(err.value)


def test_remote_code_needing_an_absent_package_is_one_line(tmp_path):
    """Qwen-VL's modeling_qwen.py imports transformers_stream_generator (in chat_stream), which
    transformers checks before loading: an absent package is a one-line error naming it."""
    root = build_qwen(tmp_path / "tiny")
    code = root / "tiny_qwen_vl.py"
    code.write_text(code.read_text() + "\n\ndef _stream():\n    import featkit_absent_stream_generator\n")
    with pytest.raises(FeatkitError, match="featkit_absent_stream_generator") as err:
        load_extractor(f"hf:{root}", options=TRUSTED)
    assert "\n" not in str(err.value)


def test_cogvlm2_positions_follow_its_rule():
    from extractors.hf_remote_adapters import cogvlm2_position_ids

    module = _module("tiny_cogvlm2")
    types = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]])
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    assert torch.equal(cogvlm2_position_ids(types, mask), module.build_position_ids(types, mask))
    assert cogvlm2_position_ids(types, mask)[0].tolist() == [0, 1, 2, 2, 3, 4, 5]


def test_phi3_v_num_crops_from_the_checkpoint_or_the_caller(phi3_v):
    from extractors.hf import load_hf_vlm  # noqa: F401  (the hf family loads remote code)
    from extractors.hf_remote import load_remote_vlm

    spec = load_extractor(f"hf:{phi3_v[1]}", options=TRUSTED).spec
    wide = load_remote_vlm(spec, phi3_v[1], "phi3_v", weights_identity="x",
                           processor_kwargs={"num_crops": 1}, options=TRUSTED)
    assert wide.key_settings()["num_crops"] == 1 and wide.n_image_tokens == 2 * 144 + 1 + 2 * 12
    with pytest.raises(FeatkitError, match="image_size"):
        load_remote_vlm(spec, phi3_v[1], "phi3_v", weights_identity="x",
                        processor_kwargs={"image_size": 3})


def test_adapter_settings_enter_the_key(vlm):
    kind, vlm = vlm
    if kind == "phi3_v":
        assert vlm.key_settings()["num_crops"] == 4 and vlm.n_image_tokens == 757
    assert vlm.key_settings()["remote_code_adapter"] == kind
    assert json.dumps(vlm.key_settings())


def test_internvl_one_tile_is_the_whole_image_squashed(internvl_chat):
    """OpenGVLab's one-tile path (``dynamic_preprocess`` with one tile: PIL ``resize`` to the
    square; ``build_transform``: bicubic resize, ImageNet mean/std), written out here: a 300 x 200
    image is squashed, not centre-cropped."""
    from torchvision import transforms

    vlm = load_extractor(f"hf:{internvl_chat[1]}", options=TRUSTED)
    size = vlm.image_preprocessing.size
    image = Image.fromarray((np.random.default_rng(1).random((200, 300, 3)) * 255).astype("uint8"))
    recipe = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    assert _close(vlm.transform(image), recipe(image.resize((size, size))))


def test_qwen_vl_pixels_are_its_image_transform(qwen):
    """Qwen-VL's ``visual.image_transform`` (what ``visual.encode`` applies to the image it opens),
    written out: bicubic resize of the whole image to the square, ToTensor, CLIP mean/std."""
    from torchvision import transforms

    vlm = load_extractor(f"hf:{qwen[1]}", options=TRUSTED)
    size = vlm.model.config.visual["image_size"]
    image = Image.fromarray((np.random.default_rng(1).random((200, 300, 3)) * 255).astype("uint8"))
    recipe = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    assert _close(vlm.transform(image), recipe(image))


def test_qwen_vl_runs_at_featkits_precision_whatever_its_config_flags(tmp_path):
    """Qwen-VL's QWenLMHeadModel casts itself by its config's bf16/fp16/fp32 flags, not by the
    dtype it is loaded in (Qwen-VL-Chat-Int4's config sets fp16; Qwen-VL-Chat's sets none, and
    its code then picks bf16 on a bf16 GPU): featkit sets the flags from its precision, so a
    checkpoint whose config says fp16 runs in fp32 on CPU, as featkit's key says."""
    root = build_qwen(tmp_path / "fp16", fp16=True)
    assert json.loads((root / "config.json").read_text())["fp16"] is True
    vlm = load_extractor(f"hf:{root}", options=TRUSTED)
    assert vlm.precision == "fp32" and vlm.model.config.fp32 and not vlm.model.config.fp16
    assert {p.dtype for p in vlm.model.parameters()} == {torch.float32}
    pixels = torch.stack([vlm.transform(im) for im in _images(1)])
    assert vlm(pixels, ["last_token"])["last_token"].dtype == torch.float32


def test_phi3_v_crops_are_the_hd_transform_of_the_centre_square(phi3_v):
    """Phi3VImageProcessor on a square image, written out (bilinear resize to g x 336, CLIP
    normalisation, a bicubic 336 px global image first, then the crops row by row): a 300 x 200
    image gives exactly that for its centre 200 x 200 square."""
    from torchvision.transforms import functional

    vlm = load_extractor(f"hf:{phi3_v[1]}", options=TRUSTED)
    image = Image.fromarray((np.random.default_rng(1).random((200, 300, 3)) * 255).astype("uint8"))
    hd = image.crop((50, 0, 250, 200)).resize((672, 672), Image.BILINEAR)
    hd = functional.normalize(functional.to_tensor(hd), (0.48145466, 0.4578275, 0.40821073),
                              (0.26862954, 0.26130258, 0.27577711))
    whole = torch.nn.functional.interpolate(hd[None], size=(336, 336), mode="bicubic")
    crops = [hd[:, row:row + 336, col:col + 336] for row in (0, 336) for col in (0, 336)]
    assert _close(vlm.transform(image), torch.cat([whole, torch.stack(crops)]))


def test_cogvlm2_is_recognised_by_its_architecture(cogvlm2):
    """CogVLM2's hub config.json names no model_type: the adapter is found by architecture."""
    config = json.loads((cogvlm2[1] / "config.json").read_text())
    assert "model_type" not in config and config["architectures"] == ["CogVLMForCausalLM"]
    assert load_extractor(f"hf:{cogvlm2[1]}", options=TRUSTED).adapter.model_type == "cogvlm2"


def test_a_tokenizer_without_a_pad_token_pads_as_the_models_code_does(cogvlm2):
    """CogVLM2's Llama-3 tokenizer has no pad token; its code fills the image with
    <|reserved_special_token_0|>, which featkit then pads texts and marks the image with."""
    vlm = load_extractor(f"hf:{cogvlm2[1]}", options=TRUSTED)
    reserved = vlm.tokenizer.convert_tokens_to_ids("<|reserved_special_token_0|>")
    assert vlm.tokenizer.pad_token_id == reserved == vlm.image_token_id
    assert vlm.embed_texts(["a", "a longer text"]).shape[0] == 2


def test_messy_images_give_their_references_features(tmp_path_factory):
    """Grayscale, palette, CMYK, 16-bit, misnamed and oddly named files through featkit.extract
    on a remote-code model give exactly the features of their RGB references, every kind."""
    import featkit
    from featkit.featureset import load_file
    from featkit.testing.images import write_messy_imagefolder

    model = f"hf:{build_internvl(tmp_path_factory.mktemp('messy') / 'tiny')}"
    root = tmp_path_factory.mktemp("messy_data")
    cases = write_messy_imagefolder(root)
    summary, = featkit.extract(model, "imagefolder", data_root=root, splits=["test"],
                               features=["visual", "aligned", "last_token"], options=TRUSTED,
                               cache_dir=tmp_path_factory.mktemp("messy_cache"), progress=False,
                               num_workers=0, device="cpu")
    assert summary.n == 2 * len(cases) and not summary.skipped
    for kind in ("visual", "aligned", "last_token"):
        fs = load_file(summary.path, kind)
        assert np.isfinite(fs.features).all()
        row = {sample_id: i for i, sample_id in enumerate(fs.sample_ids)}
        for case, messy_id, reference_id in cases:
            np.testing.assert_array_equal(fs.features[row[messy_id]], fs.features[row[reference_id]],
                                          err_msg=f"{kind} {case.name}")
