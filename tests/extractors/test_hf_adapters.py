"""LoRA repositories as users download them (VLM2Vec's: ``adapter_config.json`` and processor
files, often a ``config.json`` too, but no model weights) load as their base model plus the
adapter, never as a model missing its weights."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402

from extractors import load_extractor  # noqa: E402
from extractors.hf_weights import is_adapter_repository  # noqa: E402
from extractors.tiny import tiny_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def lora_repository(tmp_path_factory):
    """A random LoRA on the tiny LLaVA saved with the base's config and processor files next to
    it, as a VLM2Vec LoRA repository ships."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    root = tmp_path_factory.mktemp("lora")
    base = tiny_model_dir("test:tiny-llava")
    torch.manual_seed(3)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    adapter = root / "adapter-only"
    peft_model.save_pretrained(adapter)
    repository = root / "vlm2vec-lora"
    shutil.copytree(adapter, repository)
    for item in base.iterdir():
        if not item.name.startswith("model"):
            shutil.copy(item, repository / item.name)
    return adapter, repository


def test_adapter_repository_is_detected(lora_repository):
    adapter, repository = lora_repository
    assert (repository / "config.json").is_file() and is_adapter_repository(repository)
    assert is_adapter_repository(adapter)
    assert not is_adapter_repository(tiny_model_dir("test:tiny-llava"))


def test_it_loads_as_base_plus_adapter(lora_repository):
    adapter, repository = lora_repository
    from_repository = load_extractor(f"hf:{repository}")
    explicit = load_extractor("test:tiny-llava", adapter=adapter)
    base = load_extractor("test:tiny-llava")
    pixels = torch.stack([explicit.transform(Image.new("RGB", (20, 16), (9, 99, 199)))])
    kinds = ["visual", "aligned", "last_token"]
    a, b, c = from_repository(pixels, kinds), explicit(pixels, kinds), base(pixels, kinds)
    for kind in kinds:
        assert float((a[kind] - b[kind]).abs().max()) <= 1e-5, kind
    assert float((a["last_token"] - c["last_token"]).abs().max()) > 1e-3
    assert from_repository.adapter_identity.startswith("sha256:")  # the repository folder, hashed
