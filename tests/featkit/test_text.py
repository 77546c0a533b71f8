"""featkit.embed_texts and ``featkit embed-texts`` on the tiny offline VLMs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from featkit.errors import FeatkitError, UnknownNameError  # noqa: E402
from featkit.text import embed_texts, read_texts  # noqa: E402

TEXTS = ["a photo of a bird", "dog", "the object species is great crested flycatcher."]


@pytest.fixture(scope="module")
def llava():
    from extractors import load_extractor

    return load_extractor("test:tiny-llava")


def _reference(extractor, prompts):
    """One text at a time through the full model (LM head included), last position, normalised."""
    rows = []
    for prompt in prompts:
        encoded = extractor.processor.tokenizer([prompt], return_tensors="pt")
        with torch.inference_mode():
            hidden = extractor.model(**encoded, output_hidden_states=True).hidden_states[-1]
        rows.append(torch.nn.functional.normalize(hidden[0, -1].float(), dim=0).numpy())
    return np.stack(rows)


def test_embed_texts_matches_reference(llava):
    vectors = embed_texts("test:tiny-llava", TEXTS, device="cpu", batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape == (3, llava.kinds["last_token"])
    np.testing.assert_allclose(vectors, _reference(llava, TEXTS), atol=1e-6)
    reused = embed_texts("test:tiny-llava", TEXTS, extractor=llava)
    np.testing.assert_allclose(reused, vectors, atol=1e-6)


def test_instruction_is_a_prefix(llava):
    with_instruction = embed_texts("test:tiny-llava", ["dog"], instruction="Represent the class:", extractor=llava)
    np.testing.assert_allclose(with_instruction, _reference(llava, ["Represent the class: dog"]), atol=1e-6)
    assert np.abs(with_instruction - embed_texts("test:tiny-llava", ["dog"], extractor=llava)).max() > 1e-3


def test_empty_and_bad_inputs(llava):
    assert embed_texts("test:tiny-llava", [], extractor=llava).shape == (0, llava.kinds["last_token"])
    with pytest.raises(FeatkitError, match="list of texts"):
        embed_texts("test:tiny-llava", "dog", extractor=llava)
    with pytest.raises(UnknownNameError, match="no text embeddings"):
        embed_texts("pixels:8", ["dog"], device="cpu")


def test_qwen_text_embeddings_match_reference():
    from extractors import load_extractor

    qwen = load_extractor("test:tiny-qwen2vl")
    vectors = embed_texts("test:tiny-qwen2vl", TEXTS, extractor=qwen)
    np.testing.assert_allclose(vectors, _reference(qwen, TEXTS), atol=1e-6)


def test_read_texts(tmp_path):
    lines = tmp_path / "classes.txt"
    lines.write_text("a bird\n\n  a dog  \n")
    assert read_texts(lines) == ["a bird", "a dog"]
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps(["x y", " z"]))
    assert read_texts(listed) == ["x y", " z"]
    listed.write_text("{not json")
    with pytest.raises(FeatkitError, match="not valid JSON"):
        read_texts(listed)
    listed.write_text(json.dumps({"a": 1}))
    with pytest.raises(FeatkitError, match="list of strings"):
        read_texts(listed)
    with pytest.raises(FeatkitError, match="cannot read"):
        read_texts(tmp_path / "missing.txt")


def test_cli_writes_npy_and_provenance(tmp_path, llava, capsys):
    from featkit.cli import main

    texts_file = tmp_path / "classes.txt"
    texts_file.write_text("\n".join(TEXTS))
    out = tmp_path / "emb" / "classes.npy"
    code = main(["embed-texts", "--model", "test:tiny-llava", "--texts", str(texts_file), "--out", str(out),
                 "--device", "cpu", "--no-progress", "--instruction", "A class:"])
    assert code == 0
    saved = np.load(out)
    expected = embed_texts("test:tiny-llava", TEXTS, instruction="A class:", extractor=llava)
    np.testing.assert_allclose(saved, expected, atol=1e-6)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["texts"] == TEXTS and meta["shape"] == [3, 48] and meta["model"] == "test:tiny-llava"
    assert meta["weights"] == "random:seed0" and meta["instruction"] == "A class:"

    code = main(["embed-texts", "--model", "test:tiny-llava", "--text", "dog", "--text", "cat",
                 "--out", str(tmp_path / "two.npy"), "--device", "cpu", "--no-progress"])
    assert code == 0 and np.load(tmp_path / "two.npy").shape == (2, 48)

    capsys.readouterr()
    code = main(["embed-texts", "--model", "test:tiny-llava", "--text", "dog", "--out", str(tmp_path / "x.txt")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.count("\n") == 0 and ".npy" in err
