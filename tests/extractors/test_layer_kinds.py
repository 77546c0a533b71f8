"""Layer kinds (``cls@12``, ``patch_mean@-2``) of timm models and open_clip towers.

References are the libraries' own per-layer calls on the same weights: timm's
``forward_intermediates(norm=True)`` and open_clip's ``forward_intermediates(
normalize_intermediates=True)``; ``cls@-1`` / ``patch_mean@-1`` equal the models' own kinds; a
layer list runs the tower once.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("open_clip")

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.layers import (  # noqa: E402
    KindDims,
    LayerSpan,
    expand_layers,
    layer_kind,
    parse_layers,
    split_kind,
)
from extractors.timm import TimmExtractor  # noqa: E402
from featkit.errors import FeatkitError, UnknownNameError  # noqa: E402

TOWERS = ["test:tiny-dinov2", "test:tiny-eva", "test:tiny-siglip", "test:tiny-clip", "test:tiny-beit3"]


def _images(extractor, n: int = 3, seed: int = 0) -> torch.Tensor:
    size = extractor.spec.preprocessing.size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=TOWERS)
def tower(request):
    return load_extractor(request.param)


def test_kind_names_and_selections():
    assert split_kind("cls@12") == ("cls", 12) and split_kind("patch_mean@-2") == ("patch_mean", -2)
    assert split_kind("visual") == ("visual", None) and layer_kind("last_token", 20) == "last_token@20"
    for bad in ("cls@0", "cls@x", "@3"):
        with pytest.raises(UnknownNameError, match="non-zero integer"):
            split_kind(bad)
    assert parse_layers("all") == "all" and parse_layers(" ALL ") == "all"
    assert parse_layers("-1,-2,12,-1") == (-1, -2, 12)
    for bad in ("0", "1,x", ",", "1.5"):
        with pytest.raises(FeatkitError, match="--layers"):
            parse_layers(bad)
    spans = {"cls": LayerSpan(3, 8), "last_token": LayerSpan(2, 4)}
    assert expand_layers(spans, "all", model="m") == ["cls@1", "cls@2", "cls@3", "last_token@1",
                                                     "last_token@2"]
    assert expand_layers(spans, (-1, 2), model="m") == ["cls@-1", "cls@2", "last_token@-1",
                                                       "last_token@2"]
    with pytest.raises(UnknownNameError, match="2 blocks"):
        expand_layers(spans, (3,), model="m")
    with pytest.raises(FeatkitError, match="known only once"):
        expand_layers({"cls": LayerSpan(None, None)}, "all", model="m")
    assert expand_layers({"cls": LayerSpan(None, None)}, (-2,), model="m") == ["cls@-2"]
    with pytest.raises(FeatkitError, match="no layer kinds"):
        expand_layers({}, "all", model="m")


def test_kind_dims_lists_named_kinds_and_answers_layer_kinds():
    dims = KindDims({"visual": 8, "cls": 8}, {"cls": LayerSpan(3, 6)})
    assert list(dims) == ["visual", "cls"] and len(dims) == 2 and repr(dims) == "{'visual': 8, 'cls': 8}"
    assert "cls@3" in dims and "cls@-3" in dims and dims["cls@2"] == 6
    assert "cls@4" not in dims and "cls@0" not in dims and "patch_mean@1" not in dims
    assert dims == {"visual": 8, "cls": 8} and dims.get("cls@9") is None
    assert "layer kinds cls@1..3" in dims.describe()


def test_specs_declare_the_loaded_layers(tower):
    assert get_spec(tower.spec.name).layers == tower.kinds.layers
    assert "patch_mean" in tower.kinds.layers


def test_last_layer_is_the_models_own_kind(tower):
    x = _images(tower)
    layer_kinds = ["patch_mean@-1"] + (["cls@-1"] if "cls" in tower.kinds.layers else [])
    out = tower(x, [*tower.kinds, *layer_kinds])
    assert torch.equal(out["patch_mean@-1"], out["patch_mean"]) if "patch_mean" in out else True
    if "cls" in out:
        assert torch.equal(out["cls@-1"], out["cls"])
    if tower.spec.name == "test:tiny-clip":  # a class-token open_clip tower: visual is cls
        assert torch.equal(out["cls@-1"], out["visual"])
    depth = tower.kinds.layers["patch_mean"].depth
    assert torch.equal(out["patch_mean@-1"], tower(x, [f"patch_mean@{depth}"])[f"patch_mean@{depth}"])


def _library_layers(extractor, x) -> dict[int, tuple[torch.Tensor | None, torch.Tensor]]:
    """{0-based block: (class token, patch mean)} from the library's own intermediates call."""
    with torch.inference_mode():
        if isinstance(extractor, TimmExtractor):
            model = extractor.model
        elif extractor.tower.layout == "native":
            visual = extractor.tower.visual
            result = visual.forward_intermediates(x, normalize_intermediates=True, output_fmt="NLC",
                                                  intermediates_only=True, output_extra_tokens=True)
            return {i: (prefix[:, 0], tokens.mean(dim=1)) for i, (tokens, prefix) in
                    enumerate(zip(result["image_intermediates"], result["image_intermediates_prefix"]))}
        else:
            model = extractor.tower.visual.trunk
        final, layers = model.forward_intermediates(x, norm=True, output_fmt="NLC",
                                                    return_prefix_tokens=True)
    if not model.num_prefix_tokens:  # no prefix tokens: timm returns the patch tokens alone
        return {i: (None, tokens.mean(dim=1)) for i, tokens in enumerate(layers)}
    return {i: (prefix[:, 0] if model.cls_token is not None else None, tokens.mean(dim=1))
            for i, (tokens, prefix) in enumerate(layers)}


def test_every_layer_equals_the_library_intermediates(tower):
    x = _images(tower)
    depth = tower.kinds.layers["patch_mean"].depth
    kinds = [layer_kind(b, layer) for b in tower.kinds.layers for layer in range(-depth, depth + 1)
             if layer]
    out = tower(x, kinds)
    for index, (cls, patch_mean) in _library_layers(tower, x).items():
        assert float((out[f"patch_mean@{index + 1}"] - patch_mean).abs().max()) <= 1e-5
        assert float((out[f"patch_mean@{index - depth}"] - patch_mean).abs().max()) <= 1e-5
        if cls is not None:
            assert float((out[f"cls@{index + 1}"] - cls).abs().max()) <= 1e-5


def test_a_layer_list_runs_the_tower_once(tower):
    blocks = tower.kinds.layers["patch_mean"].depth
    first_block = (tower.tower if isinstance(tower, TimmExtractor) else tower.tower.token_tower).blocks[0]
    calls = []
    handle = first_block.register_forward_hook(lambda *args: calls.append(1))
    try:
        tower(_images(tower), [*tower.kinds, *expand_layers(tower.kinds.layers, "all",
                                                             model=tower.spec.name)])
    finally:
        handle.remove()
    assert calls == [1] and blocks >= 2


def test_unknown_layers_are_one_line_errors(tower):
    depth = tower.kinds.layers["patch_mean"].depth
    with pytest.raises(UnknownNameError, match="no feature kind") as err:
        tower.check_kinds([f"patch_mean@{depth + 1}"])
    assert "\n" not in str(err.value) and f"patch_mean@1..{depth}" in str(err.value)
    with pytest.raises(UnknownNameError, match="non-zero integer"):
        tower.check_kinds(["patch_mean@0"])
    if "cls" not in tower.kinds.layers:
        with pytest.raises(UnknownNameError):
            tower.check_kinds(["cls@1"])


def test_layer_kinds_go_through_the_cache(tmp_path):
    import featkit

    kinds = ["visual", "cls@1", "cls@-1", "patch_mean@-2"]
    featkit.extract("test:tiny-dinov2", "digits", splits=["test"], features=kinds,
                    cache_dir=tmp_path, progress=False, num_workers=0)
    loaded = {k: featkit.load("test:tiny-dinov2", "digits", "test", k, cache_dir=tmp_path)
              for k in kinds}
    assert all(fs.features.shape == (len(loaded["visual"]), 32) for fs in loaded.values())
    assert loaded["cls@-1"].meta["kinds"] == kinds
    featkit.extract("test:tiny-dinov2", "digits", splits=["test"], features=["cls"],
                    cache_dir=tmp_path, progress=False, num_workers=0)
    cls = featkit.load("test:tiny-dinov2", "digits", "test", "cls", cache_dir=tmp_path)
    np.testing.assert_array_equal(cls.features, loaded["cls@-1"].features)
    with pytest.raises(UnknownNameError, match="no feature kind"):
        featkit.extract("test:tiny-dinov2", "digits", splits=["test"], features=["cls@3"],
                        cache_dir=tmp_path, progress=False)


def test_a_block_loads_by_either_of_its_names(tmp_path):
    """The file records the tower's depth, so ``cls@<depth>`` reads what was stored as ``cls@-1``
    and ``patch_mean@-<depth>`` what was stored as ``patch_mean@1``; other blocks stay missing."""
    import featkit
    from extractors import load_extractor

    depth = load_extractor("test:tiny-dinov2").kinds.layers["cls"].depth
    featkit.extract("test:tiny-dinov2", "digits", splits=["test"], features=["cls@-1", "patch_mean@1"],
                    cache_dir=tmp_path, progress=False, num_workers=0)
    stored = featkit.load("test:tiny-dinov2", "digits", "test", "cls@-1", cache_dir=tmp_path)
    assert stored.meta["layer_depths"]["cls"] == depth
    by_number = featkit.load("test:tiny-dinov2", "digits", "test", f"cls@{depth}", cache_dir=tmp_path)
    np.testing.assert_array_equal(by_number.features, stored.features)
    assert by_number.kind == f"cls@{depth}"
    first = featkit.load("test:tiny-dinov2", "digits", "test", "patch_mean@1", cache_dir=tmp_path)
    from_end = featkit.load("test:tiny-dinov2", "digits", "test", f"patch_mean@-{depth}",
                            cache_dir=tmp_path)
    np.testing.assert_array_equal(from_end.features, first.features)
    with pytest.raises(UnknownNameError, match="no feature kind 'cls@1'"):
        featkit.load("test:tiny-dinov2", "digits", "test", "cls@1", cache_dir=tmp_path)
