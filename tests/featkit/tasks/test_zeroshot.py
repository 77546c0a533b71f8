"""The zero-shot task and command on the tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featkit.cli import main
from featkit.tasks import FeatureSource, zeroshot
from probes.classification import score_classification


@pytest.fixture(scope="module")
def clip_model():
    """The tiny CLIP, whole, as open_clip builds it (the weights the test models load)."""
    import open_clip

    from extractors.tiny import TINY_CLIP_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return open_clip.CLIP(**TINY_CLIP_CONFIG).eval()


def _independent_scores(model, templates, images):
    """Cosine scores by open_clip's own tokenizer, encode_text and encode_image."""
    import open_clip

    with torch.no_grad():
        classes = []
        for digit in range(10):
            prompts = [t.replace("{}", str(digit)) for t in templates]
            text = model.encode_text(open_clip.tokenize(prompts, context_length=16), normalize=True)
            mean = text.mean(dim=0)
            classes.append(mean / mean.norm())
        image = model.encode_image(images, normalize=True)
        return (image @ torch.stack(classes).T).numpy()


def _digit_images(split="test"):
    from extractors import load_extractor
    from featkit.datasets import open_dataset
    from featkit.datasets.images import to_rgb

    ds = open_dataset("digits")
    transform = load_extractor("test:tiny-clip").transform
    samples = ds.samples(split)
    return torch.stack([transform(to_rgb(ds.load_image(s))) for s in samples]), np.array(
        [s.label for s in samples])


@pytest.mark.parametrize("templates", ["digits", "cifar100"])
def test_zero_shot_equals_open_clip_encode_text(templates, digits_cache, clip_model):
    from featkit.classnames import resolve_templates

    record, = zeroshot.run(FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache),
                           ["digits"], zeroshot.Settings(templates=templates), progress=False)
    images, labels = _digit_images()
    scores = _independent_scores(clip_model, resolve_templates(templates).templates, images)
    expected = score_classification(scores, labels, [str(d) for d in range(10)])
    assert record["metrics"] == pytest.approx(expected.metrics(), abs=1e-12)
    assert record["per_class"] == pytest.approx(expected.per_class)
    text = record["provenance"]["text"]
    assert text["templates"] == list(resolve_templates(templates).templates)
    assert record["provenance"]["class_names"]["names"] == [str(d) for d in range(10)]
    assert record["settings"]["templates"] == templates and record["features"] == "aligned"


def test_label_map_scores_a_merged_class_by_its_best_member(digits_cache, clip_model, tmp_path):
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"1": "7", "3": "8"}))
    record, = zeroshot.run(FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache),
                           ["digits"], zeroshot.Settings(templates="digits",
                                                         label_map=str(label_map)),
                           progress=False)
    images, labels = _digit_images()
    scores = _independent_scores(clip_model, ['a photo of the number: "{}".'], images)
    old_to_new = {0: 0, 1: 5, 2: 1, 3: 6, 4: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7}
    merged = np.stack([scores[:, [o for o, n in old_to_new.items() if n == g]].max(axis=1)
                       for g in range(8)], axis=1)
    new_labels = np.array([old_to_new[y] for y in labels])
    names = ["0", "2", "4", "5", "6", "7", "8", "9"]
    expected = score_classification(merged, new_labels, names)
    assert record["metrics"] == pytest.approx(expected.metrics(), abs=1e-12)
    assert record["label_map"]["class_names"] == names


def test_merged_datasets_compete_and_cli_writes_the_record(digits_cache, tmp_path, capsys):
    from featkit.extraction import extract
    from featkit.testing.datasets import make_imagefolder

    folder = make_imagefolder(tmp_path / "folder", n_classes=3, train_per_class=2,
                              test_per_class=3)
    extract("test:tiny-clip", "imagefolder", data_root=folder.root, cache_dir=digits_cache,
            progress=False, num_workers=0)
    out = tmp_path / "zs.json"
    code = main(["zeroshot", "--model", "test:tiny-clip", "--dataset", "digits,imagefolder",
                 "--merge", "--templates", "dataset", "--cache-dir", str(digits_cache),
                 "--no-progress", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert set(record["per_dataset"]) == {"digits", "imagefolder"}
    assert record["counts"]["classes"] == 13
    assert record["provenance"]["class_names"]["imagefolder"]["matched_by"] == "cleaned"
    assert record["provenance"]["text"]["digits"]["template_set"] == "digits"
    assert all(0.0 <= v <= 1.0 for v in record["metrics"].values())
    assert "merged top1" in capsys.readouterr().out


def test_a_vlm_is_scored_with_its_last_token_embeddings(tmp_path, capsys):
    from featkit.extraction import extract
    from featkit.testing.datasets import make_cub

    cub = make_cub(tmp_path / "cub", n_classes=3, train_per_class=2, test_per_class=2)
    extract("test:tiny-llava", "cub", data_root=cub.root, features=["last_token"],
            cache_dir=tmp_path / "cache", progress=False, num_workers=0, splits=["test"])
    code = main(["zeroshot", "--model", "test:tiny-llava", "--dataset", "cub",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "(last_token), zero-shot on test" in out and "3 class names (name:" in out


def test_features_the_text_side_is_not_aligned_with_are_one_line_errors(digits_cache, capsys):
    code = main(["zeroshot", "--model", "test:tiny-clip", "--dataset", "digits", "--features",
                 "visual", "--cache-dir", str(digits_cache), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--features aligned" in err and len(err.strip().splitlines()) == 1


def test_hf_clip_zero_shot_equals_transformers_text_features(tmp_path):
    """A transformers CLIP: the text side is the same checkpoint's get_text_features."""
    from transformers import AutoTokenizer, CLIPModel

    from extractors.tiny import tiny_model_dir
    from featkit.extraction import extract

    extract("test:tiny-hf-clip", "digits", splits=["test"], features=["aligned"],
            cache_dir=tmp_path, progress=False, num_workers=0)
    templates = ["{}", "a {}.", "the {} !"]  # within the tiny text tower's 16 positions
    (tmp_path / "short.txt").write_text("\n".join(templates))
    record, = zeroshot.run(FeatureSource("test:tiny-hf-clip", "aligned", cache_dir=tmp_path),
                           ["digits"], zeroshot.Settings(templates=str(tmp_path / "short.txt")),
                           progress=False)
    path = tiny_model_dir("test:tiny-hf-clip")
    model, tokenizer = CLIPModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        classes = []
        for digit in range(10):
            tokens = tokenizer([t.replace("{}", str(digit)) for t in templates], padding=True,
                               return_tensors="pt")
            text = model.get_text_features(**tokens, return_dict=True).pooler_output
            mean = torch.nn.functional.normalize(text, dim=-1).mean(dim=0)
            classes.append(mean / mean.norm())
    fs = FeatureSource("test:tiny-hf-clip", "aligned", cache_dir=tmp_path).load("digits", "test")
    scores = fs.features @ torch.stack(classes).numpy().T
    expected = score_classification(scores, fs.labels, [str(d) for d in range(10)])
    assert record["metrics"] == pytest.approx(expected.metrics(), abs=1e-12)
    assert record["provenance"]["text"]["tokenizer"]["tokenizer"]["padding"] == "longest"
