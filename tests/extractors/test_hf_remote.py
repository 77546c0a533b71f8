"""The remote-code hook on a tiny remote-code VLM written here (its modelling file is copied
into the checkpoint by ``save_pretrained``, as hub repositories ship theirs): refused without
``trust_remote_code``, driven by a registered adapter with it, and each kind equal to the
model's own modules called directly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import load_extractor  # noqa: E402
from extractors.base import Preprocessing  # noqa: E402
from extractors.hf_remote import RemoteCodeAdapter, register_remote_adapter  # noqa: E402
from featkit.errors import FeatkitError, UnknownNameError  # noqa: E402

CODE = Path(__file__).parent / "remote_code" / "tiny_remote_vlm.py"
ADAPTER = RemoteCodeAdapter(
    model_type="featkit_tiny_remote", vision="vision", projector="projector",
    language_model="language_model", image_token="<image>", drop_cls=True,
    preprocessing=Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    description="test: tiny remote-code VLM",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from extractors.tiny_vlms import LLAVA_SPECIALS, build_vocab, char_tokenizer

    spec = importlib.util.spec_from_file_location("tiny_remote_vlm", CODE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_remote_vlm"] = module
    spec.loader.exec_module(module)
    module.TinyRemoteConfig.register_for_auto_class()
    module.TinyRemoteModel.register_for_auto_class("AutoModel")
    vocab = build_vocab(LLAVA_SPECIALS, None)
    text = {"vocab_size": len(vocab), "hidden_size": 48, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 256, "pad_token_id": vocab["<pad>"]}
    torch.manual_seed(0)
    model = module.TinyRemoteModel(module.TinyRemoteConfig(text_config=text)).eval()
    root = tmp_path_factory.mktemp("remote") / "tiny-remote"
    model.save_pretrained(root)
    char_tokenizer(vocab, bos="<s>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                    extra_special_tokens=["<image>"]).save_pretrained(root)
    register_remote_adapter(ADAPTER)
    return root


def test_remote_code_runs_only_when_trusted(checkpoint):
    assert (checkpoint / "tiny_remote_vlm.py").is_file()
    with pytest.raises(FeatkitError, match="--trust-remote-code") as err:
        load_extractor(f"hf:{checkpoint}")
    assert "\n" not in str(err.value)


def test_a_registered_adapter_drives_it(checkpoint):
    vlm = load_extractor(f"hf:{checkpoint}", options={"trust_remote_code": True})
    assert dict(vlm.kinds) == {"visual": 32, "aligned": 48, "last_token": 48}
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((20, 18, 3)) * 255).astype("uint8")) for _ in range(2)]
    pixels = torch.stack([vlm.transform(im) for im in images])
    out = vlm(pixels, ["visual", "aligned", "last_token"])
    model = vlm.model
    with torch.inference_mode():
        tokens = model.vision(pixels)[:, 1:]
        projected = model.projector(tokens)
        ids = vlm.image_prompt(2).input_ids
        embeds = model.language_model.get_input_embeddings()(ids)
        embeds[ids == vlm.image_token_id] = projected.reshape(-1, 48)
        hidden = model.language_model(inputs_embeds=embeds).last_hidden_state[:, -1]
    assert float((out["visual"] - tokens.mean(1)).abs().max()) <= 1e-5
    assert float((out["aligned"] - projected.mean(1)).abs().max()) <= 1e-5
    reference = torch.nn.functional.normalize(hidden, dim=-1)
    assert float((out["last_token"] - reference).abs().max()) <= 1e-5
    assert (ids == vlm.image_token_id).sum(1).tolist() == [16, 16]
    texts = vlm.embed_texts(["a bird", "a photo of a dog"])
    single = vlm.embed_texts(["a bird"])
    assert texts.shape == (2, 48) and np.abs(texts[0] - single[0]).max() <= 1e-5


def test_a_remote_model_without_an_adapter_is_one_line(checkpoint, tmp_path):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "unregistered_type"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownNameError, match="register_remote_adapter"):
        load_extractor(f"hf:{other}", options={"trust_remote_code": True})


def test_weights_the_models_code_redraws_after_loading_are_refused(checkpoint, tmp_path):
    """The Qwen-VL trap: transformers 5 runs _init_weights on a module holding a buffer the
    checkpoint lacks, and the model's code redraws loaded weights there; no key is missing, so
    only comparing the loaded values with the saved ones shows it."""
    import json
    import shutil

    from featkit.errors import MissingWeightsError

    redrawing = tmp_path / "redrawing"
    shutil.copytree(checkpoint, redrawing)
    config = json.loads((redrawing / "config.json").read_text())
    (redrawing / "config.json").write_text(json.dumps({**config, "redraw_projector": True}))
    with pytest.raises(MissingWeightsError, match="differ from the checkpoint after loading "
                                                  r"\(e\.g\. projector\.") as err:
        load_extractor(f"hf:{redrawing}", options={"trust_remote_code": True})
    assert "\n" not in str(err.value)


def test_code_written_for_another_transformers_fails_in_one_line_at_load(checkpoint, monkeypatch):
    """The unpatched Qwen-VL code on transformers 5 dies in its decoder (a removed helper): the
    load runs the decoder once and says so in one line, before any data is read."""
    import transformers

    def removed_helper(self, *args, **kwargs):
        raise AttributeError("'QWenModel' object has no attribute 'get_head_mask'")

    monkeypatch.setattr(transformers.LlamaModel, "forward", removed_helper)
    with pytest.raises(FeatkitError, match="its modelling code fails on a first image with "
                                           "transformers .*get_head_mask") as err:
        load_extractor(f"hf:{checkpoint}", options={"trust_remote_code": True})
    assert "\n" not in str(err.value)
