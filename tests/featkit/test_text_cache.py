"""Class embeddings in the cache: keyed, reused without loading the model, resumable."""

from __future__ import annotations

import numpy as np
import pytest

import featkit.text_cache as text_cache
from extractors.text_towers import load_text_tower
from featkit.cache_files import check_file
from featkit.classnames import resolve_templates
from featkit.errors import FeatkitError
from featkit.text_cache import TextSource, class_embeddings
from probes.zeroshot import class_embeddings as average

NAMES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def tower():
    return load_text_tower("test:tiny-clip", device="cpu")


def test_computed_once_then_read_back_without_the_model(tmp_path, tower, monkeypatch):
    templates = resolve_templates("cifar100")  # 18 prompts per class
    source = TextSource("test:tiny-clip", cache_dir=tmp_path, weights_identity="random:seed0")
    first = class_embeddings(source, "digits", NAMES, templates, tower=tower)
    assert first.computed and first.embeddings.shape == (10, 16)
    assert first.path.parent == tmp_path / "_text" / "test__tiny-clip" / "digits"
    assert first.path.name.startswith("prompts-cifar100-") and check_file(first.path) is None
    prompts = [p for name in NAMES for p in templates.prompts(name)]
    expected = average(tower.encode(prompts).reshape(10, 18, -1))
    np.testing.assert_allclose(first.embeddings, expected, atol=1e-6)

    def no_model(*args, **kwargs):
        raise AssertionError("the cached file should be used")

    monkeypatch.setattr("extractors.text_towers.load_text_tower", no_model)
    again = class_embeddings(source, "digits", NAMES, templates)
    assert not again.computed and again.path == first.path
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    assert again.provenance()["templates"] == list(templates.templates)
    assert again.provenance()["tokenizer"]["tokenizer"]["context_length"] == 16


def test_names_templates_and_weights_make_the_key(tmp_path, tower):
    source = TextSource("test:tiny-clip", cache_dir=tmp_path)
    simple = resolve_templates("simple")
    a = class_embeddings(source, "digits", NAMES, simple, tower=tower)
    b = class_embeddings(source, "digits", NAMES[::-1], simple, tower=tower)
    c = class_embeddings(source, "digits", NAMES, resolve_templates("digits"), tower=tower)
    assert len({a.path, b.path, c.path}) == 3 and b.computed and c.computed
    np.testing.assert_array_equal(a.embeddings[::-1], b.embeddings)
    other = TextSource("test:tiny-clip", cache_dir=tmp_path, weights_identity="sha256:other")
    with pytest.raises(FeatkitError, match="not those of the image features"):
        class_embeddings(other, "digits", NAMES, simple, tower=tower)


def test_a_killed_run_resumes_from_its_shards(tmp_path, tower, monkeypatch):
    monkeypatch.setattr(text_cache, "PROMPTS_PER_SHARD", 3)  # three classes per shard
    templates = resolve_templates("simple")
    source = TextSource("test:tiny-clip", cache_dir=tmp_path)
    calls = []
    real = tower.encode

    def dies_on_the_third_shard(texts, **kwargs):
        calls.append(list(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts, **kwargs)

    monkeypatch.setattr(tower, "encode", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        class_embeddings(source, "digits", NAMES, templates, tower=tower)
    parts = list((tmp_path / "_text").rglob("shard-*.npz"))
    assert len(parts) == 2
    calls.clear()
    resumed = class_embeddings(source, "digits", NAMES, templates, tower=tower)
    assert [len(c) for c in calls] == [3, 1]  # only the two missing shards
    assert not list((tmp_path / "_text").rglob("*.parts"))
    monkeypatch.setattr(tower, "encode", real)
    fresh = class_embeddings(TextSource("test:tiny-clip", cache_dir=tmp_path / "b"), "digits",
                             NAMES, templates, tower=tower)
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)


def test_non_finite_text_embeddings_are_refused(tmp_path, tower, monkeypatch):
    monkeypatch.setattr(tower, "encode", lambda texts, **kw: np.full((len(texts), 16), np.nan,
                                                                     np.float32))
    with pytest.raises(FeatkitError, match="NaN"):
        class_embeddings(TextSource("test:tiny-clip", cache_dir=tmp_path), "digits", NAMES,
                         resolve_templates("simple"), tower=tower)
    assert not list((tmp_path / "_text").rglob("*.h5"))
