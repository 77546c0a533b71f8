"""open_clip family: features through ``featkit extract`` equal the library's own calls, every tower
layout splits at its projection, the tag's preprocessing survives local weights, and missing weights
fail in one line without building the model."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

import featkit  # noqa: E402
from extractors import get_spec, load_extractor, tiny  # noqa: E402
from extractors import open_clip as oc  # noqa: E402
from extractors import open_clip_towers as oc_towers  # noqa: E402
from extractors.weights import weights_identity  # noqa: E402
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError  # noqa: E402
from featkit.extraction import extract  # noqa: E402

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
SHAPES = [(30, 50), (64, 40), (45, 45), (20, 70)]  # non-square: resize modes differ


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """An imagefolder dataset: one train and one test image per class, of odd shapes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for n, (height, width) in enumerate(SHAPES):
        split, label = ("train", "test")[n % 2], "ab"[n // 2]
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return root


def _images(root, split):
    return {p.relative_to(root).as_posix(): Image.open(p).convert("RGB") for p in sorted((root / split).rglob("*.png"))}


def _extract_and_load(model, root, cache, **kwargs):
    extract(model, "imagefolder", data_root=root, splits=("test",), cache_dir=cache,
            progress=False, num_workers=0, batch_size=3, **kwargs)
    weights = kwargs.get("weights")
    sets = {}
    for kind in get_spec(model).kinds:
        sets[kind] = featkit.load(model, "imagefolder", "test", kind, cache_dir=cache, weights=weights)
    return sets


def _random_clip(config, seed):
    """The library's full CLIP around a tiny config, with weights drawn from ``seed``."""
    tiny.ensure_tiny_timm_arch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**copy.deepcopy(config)).eval()
        for param in model.visual.parameters():  # move every weight away from its init value
            param.data.add_(0.02 * torch.randn_like(param))
    return model


def _library_features(model, x):
    """visual / aligned / patch_mean by calling open_clip and timm directly."""
    visual = model.visual
    with torch.no_grad():
        out = {"aligned": model.encode_image(x, normalize=False)}
        if hasattr(visual, "trunk"):
            trunk = visual.trunk
            out["visual"] = trunk.forward_head(trunk.forward_features(x), pre_logits=True)
            inter = trunk.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC", intermediates_only=True)
            out["patch_mean"] = inter[-1].mean(dim=1)
        else:
            bare = copy.deepcopy(visual)
            bare.proj = None
            out["visual"] = bare(x)
            inter = visual.forward_intermediates(x, indices=1, normalize_intermediates=True, output_fmt="NLC",
                                                 intermediates_only=True)
            out["patch_mean"] = inter["image_intermediates"][-1].mean(dim=1)
    return out


def test_import_does_not_load_torch():
    code = ("import sys, extractors, extractors.open_clip, extractors.timm, extractors.pretrained; "
            "heavy = [m for m in ('torch', 'open_clip', 'timm') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- tiny towers through featkit extract vs the library ---------------------------------------------

TINY = {
    # model id: (config, transform args the library would use)
    "test:tiny-clip": (tiny.TINY_CLIP_CONFIG, dict(mean=oc.OPENAI_MEAN, std=oc.OPENAI_STD, resize_mode="shortest")),
    "test:tiny-eva": (tiny.TINY_CONFIGS["test:tiny-eva"], dict(mean=oc.OPENAI_MEAN, std=oc.OPENAI_STD, resize_mode="shortest")),
    "test:tiny-siglip": (tiny.TINY_CONFIGS["test:tiny-siglip"], dict(mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")),
}


@pytest.mark.parametrize("model_id", list(TINY))
def test_tiny_tower_features_equal_library(model_id, image_root, tmp_path):
    """Features via ``featkit extract --weights`` equal the library's calls on the same
    preprocessed images, and the stored ``aligned`` is the projection of the stored ``visual``."""
    config, transform_args = TINY[model_id]
    library = _random_clip(config, seed=1)
    weights = tmp_path / "weights.pt"
    torch.save(library.state_dict(), weights)

    sets = _extract_and_load(model_id, image_root, tmp_path / "cache", weights=weights)

    size = config["vision_cfg"]["image_size"]
    transform = open_clip.image_transform(size, is_train=False, interpolation="bicubic", **transform_args)
    images = _images(image_root, "test")
    x = torch.stack([transform(images[sid]) for sid in sets["visual"].sample_ids])
    expected = _library_features(library, x)
    spec = get_spec(model_id)
    for kind, fs in sets.items():
        assert fs.features.dtype == np.float32
        assert fs.features.shape == (len(images), spec.kinds[kind])
        np.testing.assert_allclose(fs.features, expected[kind].numpy(), atol=1e-5, rtol=1e-5, err_msg=kind)
        assert fs.meta["weights"] == weights_identity(weights)
        pre = fs.meta["preprocessing"]
        assert (pre["size"], pre["mean"], pre["resize_mode"]) == (
            spec.preprocessing.size, list(spec.preprocessing.mean), spec.preprocessing.resize_mode)
    # on the stored float32 features, aligned is the projection of visual
    layout = oc_towers.tower_layout(library.visual)
    if layout == oc_towers.TIMM_NO_PROJ:
        np.testing.assert_array_equal(sets["aligned"].features, sets["visual"].features)
        assert oc.NO_PROJECTION_NOTE in spec.notes
    else:
        projected = _projection(library.visual, layout, sets["visual"].features)
        np.testing.assert_allclose(sets["aligned"].features, projected, atol=1e-5)


def test_tiny_clip_keeps_its_seeded_weights():
    """``test:tiny-clip`` is other tests' fixture: same id, kinds and seed-0 weights as before."""
    extractor = load_extractor("test:tiny-clip")
    assert extractor.kinds == {"visual": 32, "aligned": 16}
    assert extractor.weights_identity == "random:seed0"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = open_clip.CLIP(embed_dim=16, vision_cfg={"layers": 2, "width": 32, "head_width": 16,
                                                             "patch_size": 8, "image_size": 32}, text_cfg=TEXT)
    x = torch.randn(2, 3, 32, 32)
    out = extractor(x, ["visual", "aligned"])
    with torch.no_grad():
        torch.testing.assert_close(out["aligned"], reference.encode_image(x, normalize=False))


# -- every tower layout: aligned is the projection of visual ----------------------------------------

LAYOUTS = {
    oc_towers.NATIVE: {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "native-attentional-pool": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32,
                                "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 4,
                                "output_tokens": True},
    oc_towers.TIMM_CLASSIFIER: {"image_size": 32, "timm_model_name": "featkit_tiny_siglip_vit", "timm_pool": "avg",
                         "timm_proj": None},
    oc_towers.TIMM_HEAD: {"image_size": 32, "timm_model_name": "featkit_tiny_siglip_vit", "timm_pool": "avg",
                   "timm_proj": "linear"},
    oc_towers.TIMM_NO_PROJ: tiny.TINY_CONFIGS["test:tiny-siglip"]["vision_cfg"],
    oc_towers.ALIGNED_ONLY: {"layers": [1, 1, 1, 1], "width": 8, "head_width": 8, "image_size": 64},
}


def _projection(visual, layout, visual_feature):
    """A tower's projection applied to a visual feature, by hand from the weights (float64)."""
    v = torch.as_tensor(visual_feature).double()
    if layout == oc_towers.NATIVE:
        return (v @ visual.proj.detach().double()).numpy()
    if layout == oc_towers.TIMM_CLASSIFIER:
        head = visual.trunk.get_classifier()
    else:
        (head,) = [m for m in visual.head.modules() if isinstance(m, torch.nn.Linear)]
    bias = head.bias.detach().double() if head.bias is not None else 0.0
    return (v @ head.weight.detach().double().T + bias).numpy()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_split_at_the_projection(layout):
    config = {"embed_dim": 16, "vision_cfg": LAYOUTS[layout], "text_cfg": TEXT}
    library = _random_clip(config, seed=2)
    tower = oc_towers.VisualTower(copy.deepcopy(library.visual).eval())
    assert tower.layout == layout.split("-attentional")[0]
    size = config["vision_cfg"]["image_size"]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = tower(x, tower.kinds)
        library_aligned = library.encode_image(x, normalize=False)
    if isinstance(library_aligned, tuple):  # towers with output_tokens (CoCa): (pooled, tokens)
        library_aligned = library_aligned[0]
    torch.testing.assert_close(out["aligned"], library_aligned, atol=1e-5, rtol=1e-5)
    if layout == oc_towers.ALIGNED_ONLY:
        assert tower.kinds == ("aligned",)
        return
    if layout == oc_towers.TIMM_NO_PROJ:
        assert out["aligned"] is out["visual"]
    else:
        np.testing.assert_allclose(out["aligned"].double(), _projection(library.visual, tower.layout, out["visual"]),
                                   atol=1e-5)
    assert ("patch_mean" in tower.kinds) == (layout != "native-attentional-pool")
    dims = oc_towers.tower_dims(tower, size)
    assert dims == {k: v.shape[1] for k, v in out.items()}


# -- the real name path: open_clip:NAME:TAG with --weights ------------------------------------------

TEST_NAME = "featkit-test-vit"
TEST_CONFIG = {"embed_dim": 16, "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8,
                                               "image_size": 32}, "text_cfg": TEXT}
TAG_PREPROCESS = {"mean": (0.3, 0.4, 0.5), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear",
                  "resize_mode": "squash"}


@pytest.fixture()
def registered(monkeypatch, tmp_path):
    """A tiny model config and a pretrained tag for it registered in open_clip (undone afterwards),
    an offline empty HF cache, and a checkpoint file of the model."""
    from open_clip import factory, pretrained

    monkeypatch.setitem(factory._MODEL_CONFIGS, TEST_NAME, copy.deepcopy(TEST_CONFIG))
    monkeypatch.setitem(pretrained._PRETRAINED, TEST_NAME,
                        {"tiny": dict(url="", hf_hub="featkit/test-vit-tiny/", **TAG_PREPROCESS)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FEATKIT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    oc._describe.cache_clear()
    library = _random_clip(TEST_CONFIG, seed=3)
    weights = tmp_path / "ckpt.pt"
    torch.save(library.state_dict(), weights)
    yield library, weights
    oc._describe.cache_clear()


def test_tag_spec_and_preprocessing(registered):
    spec = get_spec(f"open_clip:{TEST_NAME}:TINY")  # tags are matched like open_clip does
    assert spec.name == f"open_clip:{TEST_NAME}:tiny"
    assert dict(spec.kinds) == {"visual": 32, "aligned": 16, "patch_mean": 32}
    assert (spec.preprocessing.size, spec.preprocessing.mean, spec.preprocessing.resize_mode) == (32, (0.3, 0.4, 0.5), "squash")
    assert spec.weights == "tiny"


def test_tag_preprocessing_survives_a_local_weights_file(registered, image_root, tmp_path):
    library, weights = registered
    model_id = f"open_clip:{TEST_NAME}:tiny"
    sets = _extract_and_load(model_id, image_root, tmp_path / "cache", weights=weights)

    # the library's reference: the tag (pointing at the same file) gives the tag's preprocessing
    from open_clip import pretrained

    pretrained._PRETRAINED[TEST_NAME]["tiny"]["file"] = str(weights)
    reference, _, preprocess = open_clip.create_model_and_transforms(TEST_NAME, pretrained="tiny")
    # a tag whose config names a local file is available offline to featkit too
    spec = get_spec(model_id)
    assert oc.OpenClipFamily().weights_available(spec) is True
    assert load_extractor(model_id).weights_identity == "tag:tiny"
    # ... while passing the file itself drops it (OpenAI mean/std): the pitfall featkit avoids
    _, _, file_preprocess = open_clip.create_model_and_transforms(TEST_NAME, pretrained=str(weights))
    assert tuple(file_preprocess.transforms[-1].mean) == oc.OPENAI_MEAN

    meta = sets["aligned"].meta
    assert meta["preprocessing"]["mean"] == list(TAG_PREPROCESS["mean"])
    assert meta["preprocessing"]["resize_mode"] == "squash"
    assert meta["weights"] == weights_identity(weights)
    images = _images(image_root, "test")
    x = torch.stack([preprocess(images[sid]) for sid in sets["aligned"].sample_ids])
    with torch.no_grad():
        np.testing.assert_allclose(sets["aligned"].features, reference.eval().encode_image(x, normalize=False).numpy(),
                                   atol=1e-5, rtol=1e-5)
    expected = _library_features(library, x)
    for kind in ("visual", "patch_mean"):
        np.testing.assert_allclose(sets[kind].features, expected[kind].numpy(), atol=1e-5, rtol=1e-5)


def test_other_weights_get_another_cache_file(registered, image_root, tmp_path):
    _, weights = registered
    other = tmp_path / "other.pt"
    torch.save(_random_clip(TEST_CONFIG, seed=4).state_dict(), other)
    model_id = f"open_clip:{TEST_NAME}:tiny"
    first = _extract_and_load(model_id, image_root, tmp_path / "cache", weights=weights)["visual"]
    second = _extract_and_load(model_id, image_root, tmp_path / "cache", weights=other)["visual"]
    assert first.path != second.path
    assert not np.allclose(first.features, second.features)


def test_weights_found_in_the_hub_cache_offline(registered, image_root, tmp_path):
    """A tag whose file is in the HF cache loads offline, with the tag as weights identity."""
    from safetensors.torch import save_file

    library, _ = registered
    spec = get_spec(f"open_clip:{TEST_NAME}:tiny")
    family = oc.OpenClipFamily()
    assert family.weights_available(spec) is False
    snapshot = tmp_path / "hf" / "models--featkit--test-vit-tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    state = {k: v.contiguous() for k, v in library.state_dict().items() if k.startswith("visual.")}
    save_file(state, snapshot / "open_clip_model.safetensors")
    assert family.weights_available(spec) is True
    sets = _extract_and_load(spec.name, image_root, tmp_path / "cache")
    assert sets["visual"].meta["weights"] == "tag:tiny"
    transform = oc._transform(spec.config["preprocess"])  # the tag's, as the library builds it
    images = _images(image_root, "test")
    x = torch.stack([transform(images[sid]) for sid in sets["visual"].sample_ids])
    np.testing.assert_allclose(sets["visual"].features, _library_features(library, x)["visual"].numpy(), atol=1e-5)


def test_local_dir_weights_and_untagged_name(registered, tmp_path):
    """``--weights`` may be an open_clip ``local-dir`` folder; with an untagged name its
    ``preprocess_cfg`` is used; a folder of another architecture is refused."""
    _, weights = registered
    folder = tmp_path / "folder"
    folder.mkdir()
    torch.save(torch.load(weights, weights_only=True), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TEST_CONFIG, "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}}))
    tagged = load_extractor(f"open_clip:{TEST_NAME}:tiny", weights=folder)
    assert tagged.preprocessing["mean"] == list(TAG_PREPROCESS["mean"])  # the tag wins
    assert tagged.weights_identity == weights_identity(folder)
    untagged = load_extractor(f"open_clip:{TEST_NAME}", weights=folder)
    assert untagged.preprocessing["mean"] == [0.1, 0.2, 0.3]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(tagged(x, ["visual"])["visual"], untagged(x, ["visual"])["visual"])

    other = copy.deepcopy(TEST_CONFIG)
    other["vision_cfg"]["width"] = 64
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": other}))
    with pytest.raises(FeatkitError, match="different visual tower"):
        load_extractor(f"open_clip:{TEST_NAME}:tiny", weights=folder)


def test_mismatched_weights_file_is_one_clear_error(registered, tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save(_random_clip(tiny.TINY_CONFIGS["test:tiny-siglip"], seed=0).state_dict(), wrong)
    with pytest.raises(FeatkitError, match="does not fit") as info:
        load_extractor(f"open_clip:{TEST_NAME}:tiny", weights=wrong)
    assert "\n" not in str(info.value)


# -- missing weights and unknown names -----------------------------------------------------------


def test_missing_weights_one_line_before_building(registered, monkeypatch, image_root, tmp_path):
    def no_build(*args, **kwargs):
        raise AssertionError("the model must not be built when its weights are missing")

    models = (f"open_clip:{TEST_NAME}:tiny", "eva02-clip-l")
    for model in (*models, f"open_clip:{TEST_NAME}"):
        get_spec(model)  # specs come from the seed table or a meta-device tower; loading must stop before any build
    monkeypatch.setattr(oc, "build_visual", no_build)
    for model in models:
        with pytest.raises(MissingWeightsError) as info:
            extract(model, "imagefolder", data_root=image_root, splits=("test",), cache_dir=tmp_path,
                    progress=False, num_workers=0)
        message = str(info.value)
        assert "\n" not in message and "--weights" in message and "HF_HUB_OFFLINE" in message
    assert "timm/eva02_large_patch14_clip_224.merged2b_s4b_b131k" in message
    with pytest.raises(MissingWeightsError, match="names no pretrained tag"):
        load_extractor(f"open_clip:{TEST_NAME}")
    with pytest.raises(MissingWeightsError, match="weights not found"):
        load_extractor(f"open_clip:{TEST_NAME}:tiny", weights=tmp_path / "nowhere.pt")


def test_unknown_names_suggest():
    with pytest.raises(UnknownNameError, match="did you mean EVA02-L-14"):
        get_spec("open_clip:EVA02-L14:merged2b_s4b_b131k")
    with pytest.raises(UnknownNameError, match="tags: merged2b_s4b_b131k"):
        get_spec("open_clip:EVA02-L-14:laion2b")


# -- the seeds' models --------------------------------------------------------------------------------

SEEDS = {
    # alias: (id, {kind: dim}, size, resize mode, layout)
    "eva02-clip-l": ("open_clip:EVA02-L-14:merged2b_s4b_b131k", {"visual": 1024, "aligned": 768, "patch_mean": 1024}, 224, "shortest", oc_towers.TIMM_CLASSIFIER),
    "eva02-clip-l-336": ("open_clip:EVA02-L-14-336:merged2b_s6b_b61k", {"visual": 1024, "aligned": 768, "patch_mean": 1024}, 336, "shortest", oc_towers.TIMM_CLASSIFIER),
    "clip-l": ("open_clip:ViT-L-14-quickgelu:openai", {"visual": 1024, "aligned": 768, "patch_mean": 1024}, 224, "shortest", oc_towers.NATIVE),
    "coca-l": ("open_clip:coca_ViT-L-14:laion2b_s13b_b90k", {"visual": 768, "aligned": 768, "cls": 1024}, 224, "shortest", oc_towers.NATIVE),
    "dfn-h": ("open_clip:ViT-H-14-quickgelu:dfn5b", {"visual": 1280, "aligned": 1024, "patch_mean": 1280}, 224, "squash", oc_towers.NATIVE),
    "siglip-so400m": ("open_clip:ViT-SO400M-14-SigLIP:webli", {"visual": 1152, "aligned": 1152, "patch_mean": 1152}, 224, "squash", oc_towers.TIMM_NO_PROJ),
    "clip-l-336": ("open_clip:ViT-L-14-336-quickgelu:openai", {"visual": 1024, "aligned": 768, "patch_mean": 1024}, 336, "shortest", oc_towers.NATIVE),
    "dfn-h-378": ("open_clip:ViT-H-14-378-quickgelu:dfn5b", {"visual": 1280, "aligned": 1024, "patch_mean": 1280}, 378, "squash", oc_towers.NATIVE),
    "siglip2-so400m": ("open_clip:ViT-SO400M-14-SigLIP2:webli", {"visual": 1152, "aligned": 1152, "patch_mean": 1152}, 224, "squash", oc_towers.TIMM_NO_PROJ),
}


def test_seed_aliases_specs(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    family = oc.OpenClipFamily()
    assert {s.name for s in family.specs()} == {v[0] for v in SEEDS.values()}
    for alias, (model_id, kinds, size, resize_mode, layout) in SEEDS.items():
        spec = get_spec(alias)
        name, tag = spec.config["model_name"], spec.config["tag"]
        tag_cfg = open_clip.get_pretrained_cfg(name, tag)
        assert spec.name == model_id and dict(spec.kinds) == kinds, alias
        assert (spec.preprocessing.size, spec.preprocessing.resize_mode) == (size, resize_mode), alias
        assert spec.preprocessing.mean == tuple(tag_cfg["mean"]) and spec.preprocessing.std == tuple(tag_cfg["std"])
        assert spec.config["layout"] == layout
        assert family.weights_available(spec) is False
    assert oc.NO_PROJECTION_NOTE in get_spec("siglip-so400m").notes
    assert get_spec("clip-l").config["quick_gelu"] is True


def test_seed_dims_match_a_meta_forward():
    """Dims read from parameters equal the shapes of an actual (meta-device) forward."""
    for alias in ("eva02-clip-l", "coca-l", "siglip-so400m"):
        spec = get_spec(alias)
        cfg = open_clip.get_model_config(spec.config["model_name"])
        with torch.device("meta"):
            tower = oc_towers.VisualTower(oc.build_visual(cfg))
        assert oc_towers._meta_dims(tower, spec.preprocessing.size) == dict(spec.kinds), alias


def test_quick_gelu_follows_the_tag():
    """Plain ViT-L-14 with the openai tag gets QuickGELU, as the weights were trained (open_clip
    itself only warns); the config's own -quickgelu variant needs nothing forced."""
    spec = get_spec("open_clip:ViT-L-14:openai")
    assert spec.config["quick_gelu"] is True and "QuickGELU" in spec.notes
    assert "QuickGELU" not in get_spec("clip-l").notes


@pytest.mark.slow
def test_eva02_l_smoke(image_root, tmp_path):
    """The real EVA02-L-14 tower (random init), saved and reloaded through ``--weights``."""
    from safetensors.torch import save_file

    spec = get_spec("eva02-clip-l")
    cfg = open_clip.get_model_config("EVA02-L-14")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        visual = oc.build_visual(cfg).eval()
    weights = tmp_path / "eva02.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in visual.state_dict().items()}, weights)
    extract("eva02-clip-l", "imagefolder", data_root=image_root, splits=("test",), cache_dir=tmp_path / "cache",
            weights=weights, progress=False, num_workers=0, batch_size=1, features=("visual", "aligned"))
    loaded = {k: featkit.load("eva02-clip-l", "imagefolder", "test", k, cache_dir=tmp_path / "cache") for k in ("visual", "aligned")}
    image = Image.open(image_root / loaded["visual"].sample_ids[0]).convert("RGB")
    transform = open_clip.image_transform(224, is_train=False, mean=oc.OPENAI_MEAN, std=oc.OPENAI_STD)
    x = transform(image)[None]
    with torch.no_grad():
        aligned = visual(x)
        pooled = visual.trunk.forward_head(visual.trunk.forward_features(x), pre_logits=True)
    assert loaded["visual"].features.shape[1] == spec.kinds["visual"] == 1024
    np.testing.assert_allclose(loaded["visual"].features[0], pooled[0].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(loaded["aligned"].features[0], aligned[0].numpy(), atol=1e-4, rtol=1e-4)
