"""timm family: ``visual``/``cls``/``patch_mean`` through ``featkit extract`` equal timm's own calls,
weights load through timm's pretrained path from ``--weights``, the tag's data config is used,
and missing weights fail in one line."""

from __future__ import annotations

import numpy as np
import pytest

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402

import featkit  # noqa: E402
from extractors import get_spec, load_extractor, tiny  # noqa: E402
from extractors import timm as tf  # noqa: E402
from extractors.weights import weights_identity  # noqa: E402
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError  # noqa: E402
from featkit.extraction import extract  # noqa: E402


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for n, (height, width) in enumerate([(30, 50), (64, 40), (45, 45), (20, 70)]):
        folder = root / ("train", "test")[n % 2] / "ab"[n // 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return root


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FEATKIT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _perturbed(model, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for param in model.parameters():
            param.data.add_(0.02 * torch.randn_like(param))
    return model.eval()


def _library_features(model, x):
    """visual / cls / patch_mean from timm's own calls."""
    with torch.no_grad():
        tokens = model.forward_features(x)
        inter = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC", intermediates_only=True)
        return {
            "visual": model.forward_head(tokens, pre_logits=True),
            "cls": tokens[:, 0],
            "patch_mean": inter[-1].mean(dim=1),
        }


def _extract_test(model, root, cache, **kwargs):
    extract(model, "imagefolder", data_root=root, splits=("test",), cache_dir=cache, progress=False,
            num_workers=0, batch_size=3, **kwargs)
    weights = kwargs.get("weights")
    return {k: featkit.load(model, "imagefolder", "test", k, cache_dir=cache, weights=weights) for k in get_spec(model).kinds}


def _inputs(root, transform, sample_ids):
    return torch.stack([transform(Image.open(root / sid).convert("RGB")) for sid in sample_ids])


def test_tiny_dinov2_features_equal_timm(image_root, tmp_path):
    library = _perturbed(tf.create_model(tiny.TINY_DINOV2_NAME, **tiny.TINY_DINOV2_KWARGS), seed=1)
    weights = tmp_path / "tiny.pt"
    torch.save(library.state_dict(), weights)
    sets = _extract_test("test:tiny-dinov2", image_root, tmp_path / "cache", weights=weights)

    data_cfg = resolve_data_config(model=library)
    assert data_cfg["input_size"] == (3, 518, 518)  # timm ignores img_size here: featkit must not
    data_cfg["input_size"] = (3, 42, 42)
    x = _inputs(image_root, create_transform(**data_cfg, is_training=False), sets["visual"].sample_ids)
    expected = _library_features(library, x)
    for kind, fs in sets.items():
        assert fs.features.shape == (2, 32) and fs.features.dtype == np.float32
        np.testing.assert_allclose(fs.features, expected[kind].numpy(), atol=1e-5, rtol=1e-5, err_msg=kind)
        assert fs.meta["weights"] == weights_identity(weights)
        assert fs.meta["preprocessing"]["input_size"] == [3, 42, 42]
    np.testing.assert_array_equal(sets["visual"].features, sets["cls"].features)  # token pooling


def test_real_name_with_weights_file_and_image_size(image_root, tmp_path, offline):
    """``timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k --weights FILE`` at ``image_size=48``: timm's
    own checkpoint filter resamples the 224-px position embedding, exactly as calling timm does."""
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    source = _perturbed(timm.create_model(name, pretrained=False), seed=2)
    weights = tmp_path / "vit_tiny.pt"
    torch.save(source.state_dict(), weights)
    del source
    sets = _extract_test(f"timm:{name}", image_root, tmp_path / "cache", weights=weights,
                         options={"image_size": "48"})
    library = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, img_size=48).eval()
    data_cfg = dict(resolve_data_config(model=library), input_size=(3, 48, 48))
    x = _inputs(image_root, create_transform(**data_cfg, is_training=False), sets["visual"].sample_ids)
    expected = _library_features(library, x)
    for kind, fs in sets.items():
        np.testing.assert_allclose(fs.features, expected[kind].numpy(), atol=1e-5, rtol=1e-5, err_msg=kind)
    meta = sets["visual"].meta
    assert meta["settings"]["image_size"] == 48 and meta["preprocessing"]["input_size"] == [3, 48, 48]
    assert meta["preprocessing"]["crop_pct"] == 0.9 and meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_weights_folder(tmp_path, offline):
    """``--weights`` may be a hub-snapshot-like folder holding model.safetensors."""
    from safetensors.torch import save_file

    model = _perturbed(tf.create_model(tiny.TINY_DINOV2_NAME, **tiny.TINY_DINOV2_KWARGS), seed=3)
    folder = tmp_path / "snapshot"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    extractor = load_extractor("test:tiny-dinov2", weights=folder)
    assert extractor.weights_identity == weights_identity(folder)
    x = torch.randn(2, 3, 42, 42)
    torch.testing.assert_close(extractor(x, ["visual"])["visual"], _library_features(model, x)["visual"])


def test_seed_aliases(offline):
    expected = {
        "dinov2-s": ("timm:vit_small_patch14_dinov2.lvd142m", 384),
        "dinov2-b": ("timm:vit_base_patch14_dinov2.lvd142m", 768),
        "dinov2-l": ("timm:vit_large_patch14_dinov2.lvd142m", 1024),
        "dinov2-g": ("timm:vit_giant_patch14_dinov2.lvd142m", 1536),
        "vit-b-in21k": ("timm:vit_base_patch16_224.augreg_in21k_ft_in1k", 768),
    }
    family = tf.TimmFamily()
    assert {v[0] for v in expected.values()} <= {s.name for s in family.specs()}
    assert {s.name for s in family.specs()} == {f"timm:{n}" for n in tf.SEED_MODELS.values()}
    for alias, (model_id, dim) in expected.items():
        spec = get_spec(alias)
        assert spec.name == model_id and dict(spec.kinds) == {"visual": dim, "cls": dim, "patch_mean": dim}
        data_cfg = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model_id[5:]).to_dict())
        pre = spec.preprocessing
        assert (pre.size, pre.mean, pre.std, pre.crop_pct, pre.interpolation) == (
            data_cfg["input_size"][-1], data_cfg["mean"], data_cfg["std"], data_cfg["crop_pct"], data_cfg["interpolation"])
        assert family.weights_available(spec) is False
    assert get_spec("dinov2-l").preprocessing.size == 518
    assert get_spec("vit-b-in21k").preprocessing.crop_pct == 0.9


def test_names_resolve_to_canonical_tags():
    assert get_spec("timm:vit_base_patch16_224").name == "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert dict(get_spec("timm:resnet50.a1_in1k").kinds) == {"visual": 2048}  # no tokens: visual only
    eva = get_spec("timm:eva02_large_patch14_clip_224.merged2b")
    assert dict(eva.kinds) == {"visual": 1024, "cls": 1024, "patch_mean": 1024}
    with pytest.raises(UnknownNameError, match="did you mean vit_small_patch14_dinov2"):
        get_spec("timm:vit_smal_patch14_dinov2")
    with pytest.raises(UnknownNameError, match="tags: lvd142m"):
        get_spec("timm:vit_small_patch14_dinov2.in1k")


def test_missing_weights_one_line(image_root, tmp_path, offline, monkeypatch):
    spec = get_spec("dinov2-l")

    def no_build(*args, **kwargs):
        raise AssertionError("the model must not be built when its weights are missing")

    monkeypatch.setattr(tf, "create_model", no_build)
    with pytest.raises(MissingWeightsError) as info:
        extract("dinov2-l", "imagefolder", data_root=image_root, splits=("test",), cache_dir=tmp_path,
                progress=False, num_workers=0)
    message = str(info.value)
    assert "\n" not in message and "--weights" in message and "HF_HUB_OFFLINE" in message
    assert "timm/vit_large_patch14_dinov2.lvd142m" in message and spec.name in message


def test_bad_image_size_option(offline):
    with pytest.raises(FeatkitError, match="expected an integer"):
        load_extractor("dinov2-s", options={"image_size": "big"})
    for value in (0, "-3"):
        with pytest.raises(FeatkitError, match="image_size must be a positive integer"):
            load_extractor("dinov2-s", options={"image_size": value})
