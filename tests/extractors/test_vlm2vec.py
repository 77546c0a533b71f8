"""VLM2Vec checkpoints embed as VLM2Vec's own evaluation does: recognised by name (hub id,
directory, LoRA repository) or asked for with ``vlm2vec=v1|v2``, they get VLM2Vec's prompt, its
image resizing and its processor settings; the reference here is the VLM2Vec recipe written out
by hand on the same tiny weights (stretch to 1344 px, the processor with VLM2Vec's pixel
limits, the model's own forward at the last token)."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import load_extractor, vlm2vec  # noqa: E402
from extractors.tiny import tiny_model_dir  # noqa: E402
from extractors.tiny_vlms import build_tiny_qwen2vl  # noqa: E402
from featkit.errors import FeatkitError  # noqa: E402

REPO = "TIGER-Lab/VLM2Vec-Qwen2VL-2B"
INSTRUCTION = "Represent the given image for classification"


def test_published_checkpoints_are_recognised_by_hub_id_or_directory_name(tmp_path):
    assert vlm2vec.recognised(["TIGER-Lab/VLM2Vec-Full"]) == ("v1", "phi3_v")
    assert vlm2vec.recognised(["tiger-lab/vlm2vec-qwen2vl-7b"]) == ("v1", "qwen2_vl")
    local = tmp_path / "VLM2Vec-V2.0"
    local.mkdir()
    assert vlm2vec.recognised([None, f"{local}/"]) == ("v2", "qwen2_vl")
    assert vlm2vec.recognised(["/nowhere/VLM2Vec-V2.0"]) is None  # not a directory here
    assert vlm2vec.recognised(["someone/VLM2Vec-Full"]) is None  # another owner's repository
    assert vlm2vec.recognised(["Qwen/Qwen2-VL-2B-Instruct", "/cache/snapshots/abc"]) is None
    assert vlm2vec.recognised(["someone/VLM2Vec-Qwen2VL-2B-finetuned"]) is None


def test_the_option_is_applied_or_refused_in_one_line():
    assert vlm2vec.protocol_for("off", "qwen2_vl", [REPO], "m") is None
    assert vlm2vec.protocol_for("auto", "qwen2_vl", ["Qwen/Qwen2-VL-2B-Instruct"], "m") is None
    assert vlm2vec.protocol_for("auto", "qwen2_vl", [REPO], "m").release == "v1"
    # a directory named like a published checkpoint but holding another architecture is not it
    assert vlm2vec.protocol_for("auto", "llava", [REPO.replace("Qwen2VL-2B", "LoRA")], "m") is None
    assert vlm2vec.protocol_for("v2", "qwen2_vl", ["x"], "m").native_resolution
    with pytest.raises(FeatkitError, match="expected one of auto, off, v1, v2") as err:
        vlm2vec.protocol_for("yes", "qwen2_vl", [REPO], "m")
    assert "\n" not in str(err.value)
    with pytest.raises(FeatkitError, match="VLM2Vec v1 has no such backbone.*vlm2vec=off"):
        vlm2vec.protocol_for("v1", "internvl", ["x"], "m")
    with pytest.raises(FeatkitError, match="no such backbone"):  # v1 published no Qwen2.5-VL
        vlm2vec.protocol_for("v1", "qwen2_5_vl", ["x"], "m")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding a tiny Qwen2-VL (28 px merged tokens, as the real one) under
    VLM2Vec's repository id, as ``hf download TIGER-Lab/VLM2Vec-Qwen2VL-2B`` leaves it."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    build_tiny_qwen2vl(repo / "snapshots" / ("0" * 40), patch_size=14, vision_layers=1)
    return root


@pytest.fixture
def in_hub_cache(hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache / ("models--" + REPO.replace("/", "--")) / "snapshots" / ("0" * 40)


def _images():
    return [Image.new("RGB", (300, 200), (200, 30, 60)),
            Image.linear_gradient("L").resize((90, 160)).convert("RGB")]


def test_a_hub_checkpoint_embeds_with_vlm2vecs_prompt_resizing_and_pixel_limits(in_hub_cache):
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    vlm = load_extractor(f"hf:{REPO}", options={"instruction": INSTRUCTION})
    settings = vlm.key_settings()["vlm2vec"]
    assert settings["release"] == "v1" and settings["stretch_to"] == vlm2vec.HIGH_RESOLUTION
    assert vlm.prompt == f"<|image_pad|>\n{INSTRUCTION}\n"
    size = vlm.processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (28 * 28 * 4, 28 * 28 * 1280)

    # VLM2Vec by hand: stretch to 1344 x 1344, its processor limits, the model's own forward
    processor = AutoProcessor.from_pretrained(in_hub_cache, size=vlm2vec.VLM2VEC_QWEN_PIXELS)
    model = Qwen2VLForConditionalGeneration.from_pretrained(in_hub_cache, dtype=torch.float32).eval()
    images = _images()
    pixels = torch.stack([vlm.transform(image) for image in images])
    got = vlm(pixels, ["aligned", "last_token"])
    for row, image in enumerate(images):
        stretched = image.resize((1344, 1344))
        inputs = processor(text=[f"<|image_pad|>\n{INSTRUCTION}\n"], images=[stretched],
                           return_tensors="pt")
        assert inputs["image_grid_thw"][0].tolist() == [1, 70, 70]  # 1344 px within 1280 tokens
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]
            projected = model.model.get_image_features(
                inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output[0]
        want = torch.nn.functional.normalize(states, dim=-1)
        assert float((got["last_token"][row] - want).abs().max()) <= 1e-5
        assert float((got["aligned"][row] - projected.mean(0)).abs().max()) <= 1e-5


def test_vlm2vec_off_embeds_featkits_way_and_keys_differ(in_hub_cache):
    on = load_extractor(f"hf:{REPO}")
    off = load_extractor(f"hf:{REPO}", options={"vlm2vec": "off"})
    assert "vlm2vec" not in off.key_settings() and off.prompt.startswith("<|image_pad|> ")
    assert on.key_settings() != off.key_settings()
    assert on.transform(_images()[0]).shape != off.transform(_images()[0]).shape


def test_image_size_is_refused_where_vlm2vec_fixes_the_resolution(in_hub_cache):
    with pytest.raises(FeatkitError, match="stretches every image to 1344 px.*vlm2vec=off") as err:
        load_extractor(f"hf:{REPO}", options={"image_size": 224})
    assert "\n" not in str(err.value)


def test_v2_stretches_to_image_size_and_says_how_it_differs():
    vlm = load_extractor("test:tiny-qwen2vl", options={"vlm2vec": "v2", "image_size": 64})
    settings = vlm.key_settings()["vlm2vec"]
    assert settings["native_resolution"] and "own size" in settings["note"]
    image = _images()[0]
    want = vlm.processor.image_processor(images=image.resize((64, 64)), return_tensors="pt")
    assert torch.equal(vlm.transform(image), want["pixel_values"])


@pytest.fixture(scope="module")
def llava_next_lora(tmp_path_factory):
    """VLM2Vec's LLaVA-NeXT LoRA repository layout (adapter, config and processor files, no
    weights) under the repository's name, on the tiny LLaVA-NeXT."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tiny_model_dir("test:tiny-llava-next")
    torch.manual_seed(5)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    repository = tmp_path_factory.mktemp("lora") / "VLM2Vec-LLaVa-Next"
    peft_model.save_pretrained(repository)
    for item in base.iterdir():
        if not item.name.startswith("model"):
            shutil.copy(item, repository / item.name)
    return repository


def test_a_lora_repository_is_recognised_by_its_name(llava_next_lora):
    vlm = load_extractor(f"hf:{llava_next_lora}")
    assert vlm.key_settings()["vlm2vec"]["backbone"] == "llava_next"
    assert vlm.adapter_identity is not None
    image = _images()[1]
    want = vlm.processor.image_processor(images=image.resize((1344, 1344)), return_tensors="pt")
    assert torch.equal(vlm.transform(image), want["pixel_values"][0])


@pytest.fixture(scope="module")
def phi3_v_full(tmp_path_factory):
    """A tiny Phi-3.5-V remote-code checkpoint under VLM2Vec-Full's name, whose own
    preprocessor_config.json says num_crops 1 (VLM2Vec evaluates it with 4)."""
    import json

    from tests.extractors.test_hf_remote_adapters import build_phi3_v

    root = build_phi3_v(tmp_path_factory.mktemp("phi3") / "VLM2Vec-Full")
    (root / "preprocessor_config.json").write_text(json.dumps({"num_crops": 1}))
    return root


def test_vlm2vec_full_gets_its_crops_and_prompt_through_the_remote_code_hook(phi3_v_full):
    trusted = {"trust_remote_code": True}
    full = load_extractor(f"hf:{phi3_v_full}", options=trusted)
    off = load_extractor(f"hf:{phi3_v_full}", options={**trusted, "vlm2vec": "off"})
    assert full.key_settings()["vlm2vec"]["backbone"] == "phi3_v"
    assert (full.key_settings()["num_crops"], off.key_settings()["num_crops"]) == (4, 1)
    assert full.n_image_tokens > off.n_image_tokens
    text = full.tokenizer(f"\n{full.instruction}\n", add_special_tokens=False)["input_ids"]
    assert full._prompt_ids[0, -len(text):].tolist() == text  # "<image>\n<instruction>\n"
    assert off._prompt_ids[0, -1].item() != full._prompt_ids[0, -1].item()


def test_a_lora_on_a_remote_code_base_is_applied_not_ignored(phi3_v_full, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    trusted = {"trust_remote_code": True, "vlm2vec": "v1"}
    model = AutoModelForCausalLM.from_pretrained(phi3_v_full, trust_remote_code=True)
    torch.manual_seed(7)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=["qkv_proj"]))
    lora.save_pretrained(tmp_path / "VLM2Vec-LoRA")
    adapted = load_extractor(f"hf:{tmp_path / 'VLM2Vec-LoRA'}", options=trusted)
    base = load_extractor(f"hf:{phi3_v_full}", options=trusted)
    assert adapted.key_settings()["adapter"].startswith("sha256:")
    assert base.key_settings()["adapter"] is None
    pixels = torch.stack([base.transform(_images()[0])])
    a, b = adapted(pixels, ["last_token"]), base(pixels, ["last_token"])
    assert float((a["last_token"] - b["last_token"]).abs().max()) > 1e-3


def test_a_lora_given_as_adapter_is_recognised_by_its_name(llava_next_lora):
    vlm = load_extractor("test:tiny-llava-next", adapter=str(llava_next_lora))
    assert vlm.key_settings()["vlm2vec"]["backbone"] == "llava_next"
    plain = load_extractor("test:tiny-llava-next")
    assert "vlm2vec" not in plain.key_settings()


def _snapshot(root, repo_id: str):
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("1" * 40)
    return repo / "snapshots" / ("1" * 40)


def test_the_hub_lora_layout_loads_base_plus_adapter_with_the_protocol(tmp_path, monkeypatch):
    """TIGER-Lab/VLM2Vec-Qwen2VL-2B as VLM2Vec's demos load it: a LoRA repository naming
    Qwen/Qwen2-VL-2B-Instruct, both in the Hugging Face cache."""
    import json

    pytest.importorskip("peft")
    from huggingface_hub import constants
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    base = build_tiny_qwen2vl(_snapshot(tmp_path, "Qwen/Qwen2-VL-2B-Instruct"), patch_size=14,
                              vision_layers=1)
    torch.manual_seed(11)
    model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj"]))
    adapter = _snapshot(tmp_path, REPO)
    lora.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    vlm = load_extractor(f"hf:{REPO}")
    assert vlm.key_settings()["vlm2vec"]["release"] == "v1"
    assert vlm.adapter_identity is not None and vlm.prompt.endswith("\n")
    base_vlm = load_extractor("hf:Qwen/Qwen2-VL-2B-Instruct", options={"vlm2vec": "v1"})
    pixels = torch.stack([vlm.transform(_images()[0])])
    assert torch.equal(pixels, torch.stack([base_vlm.transform(_images()[0])]))
    a, b = vlm(pixels, ["last_token"]), base_vlm(pixels, ["last_token"])
    assert float((a["last_token"] - b["last_token"]).abs().max()) > 1e-3  # the adapter applies
