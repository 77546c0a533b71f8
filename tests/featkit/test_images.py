"""The one image decode path (issue 15, item 1): every PIL mode decodes to the RGB pixels its
documented rule gives, every model family receives those pixels (the features of a messy file
equal those of a lossless RGB copy of its expected pixels), and an image over ``--max-pixels``
is a bad image like an undecodable one: named in one line, or left out under ``--skip-bad``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featkit
from featkit.datasets import open_dataset
from featkit.datasets.images import DEFAULT_MAX_PIXELS, ImageTooLargeError, decode_image, to_rgb
from featkit.errors import BadImageError, FeatkitError
from featkit.featureset import load_file
from featkit.testing.datasets import make_imagefolder
from featkit.testing.images import (
    SIZE,
    write_huge_png,
    write_messy_imagefolder,
    write_messy_images,
)

REPO = Path(__file__).resolve().parents[2]
#: one model per family and transform: pixels, open_clip, timm, and every hf architecture
#: (VLMs, dual encoders) on its tiny model
MODELS = ["pixels:8", "test:tiny-clip", "test:tiny-eva", "test:tiny-siglip", "test:tiny-dinov2",
          "test:tiny-beit3", "test:tiny-llava", "test:tiny-qwen2vl", "test:tiny-llava-next",
          "test:tiny-llava-onevision", "test:tiny-internvl", "test:tiny-idefics3",
          "test:tiny-smolvlm", "test:tiny-paligemma", "test:tiny-blip2", "test:tiny-qwen2_5_vl",
          "test:tiny-qwen3_vl", "test:tiny-molmo2", "test:tiny-phi4-multimodal",
          "test:tiny-hf-clip", "test:tiny-siglip2"]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return write_messy_images(tmp_path_factory.mktemp("messy"))


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy_folder")
    return root, write_messy_imagefolder(root)


def _case(cases, name):
    return next(c for c in cases if c.name == name)


# -- the decode rules ---------------------------------------------------------------------------


def test_the_cases_cover_every_mode(messy):
    modes = {c.mode for c in messy}
    assert {"RGB", "L", "LA", "RGBA", "P", "1", "CMYK", "I;16", "I;16B", "I", "F"} <= modes
    assert _case(messy, "palette_transparent").mode == "P"


@pytest.mark.parametrize("name", [
    "rgb", "grey", "grey_alpha", "rgba", "palette", "palette_transparent", "gif_transparent",
    "bilevel", "cmyk_tiff", "cmyk_jpeg", "grey16_png", "grey16_tiff", "grey16_big_endian_tiff",
    "grey16_pgm", "int32_tiff", "float_tiff", "float_unit_tiff", "png_named_jpeg", "exif_rotated",
    "comma_name", "non_ascii_name",
])
def test_every_mode_decodes_to_its_rule(name, messy):
    case = _case(messy, name)
    image = decode_image(case.path)
    assert image.mode == "RGB" and image.size == SIZE
    np.testing.assert_array_equal(np.asarray(image), case.expected)


def test_sixteen_bit_and_float_images_keep_their_range(messy):
    """PIL's own conversion clips 16-bit data to white and truncates 0..1 floats to black."""
    for name in ("grey16_png", "float_unit_tiff"):
        pixels = np.asarray(decode_image(_case(messy, name).path))
        assert 0 < pixels.mean() < 255 and pixels.std() > 10
    assert np.asarray(decode_image(_case(messy, "grey16_png").path))[0, :2, 0].tolist() == [0, 255]


def test_partial_alpha_is_composited_on_white():
    colour, alpha = np.array([[10, 200, 90, 0]], np.uint8), np.array([[0, 64, 128, 255]], np.uint8)
    expected = np.rint(colour * (alpha / 255.0) + 255 * (1 - alpha / 255.0))
    for mode, pixels in (("LA", np.dstack([colour, alpha])),
                         ("RGBA", np.dstack([colour, colour, colour, alpha]))):
        out = np.asarray(to_rgb(Image.fromarray(pixels, mode))).astype(int)
        assert np.abs(out - expected[..., None]).max() <= 1, (mode, out)
    premultiplied = Image.fromarray(np.dstack([colour, colour, colour, alpha]), "RGBA").convert("RGBa")
    assert np.abs(np.asarray(to_rgb(premultiplied)).astype(int) - expected[..., None]).max() <= 2
    assert np.asarray(to_rgb(Image.new("PA", (1, 1), (0, 0))))[0, 0].tolist() == [255, 255, 255]


def test_float_edge_cases():
    constant = Image.fromarray(np.full((2, 2), 0.7, np.float32))
    assert np.asarray(to_rgb(constant)).max() == 0  # no range: black, as documented
    values = np.array([[np.nan, 1.0, 3.0, np.inf]], np.float32)
    assert np.asarray(to_rgb(Image.fromarray(values)))[0, :, 0].tolist() == [0, 0, 255, 0]


def test_exif_orientation_is_not_applied(messy):
    case = _case(messy, "exif_rotated")
    with Image.open(case.path) as image:
        assert image.getexif().get(0x0112) == 6  # the tag is there; a viewer would rotate it
    assert decode_image(case.path).size == SIZE


def test_format_is_read_from_content(messy, tmp_path):
    case = _case(messy, "png_named_jpeg")
    with Image.open(case.path) as image:
        assert case.path.suffix == ".JPEG" and image.format == "PNG"
    jpeg_named_png = tmp_path / "photo.png"
    Image.fromarray(case.expected).save(jpeg_named_png, format="JPEG")
    assert decode_image(jpeg_named_png).size == SIZE


def test_truncated_and_non_image_files_raise_oserror(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(OSError):
        decode_image(tmp_path / "notes.png")


# -- the pixel limit ----------------------------------------------------------------------------


def test_default_limit_is_pils_bomb_threshold(tmp_path):
    assert DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS
    huge = write_huge_png(tmp_path / "huge.png")  # 200 MP declared in a few bytes
    with pytest.raises(ImageTooLargeError, match=r"20000x10000 image \(200,000,000 pixels\) is over the limit of 178,956,970"):
        decode_image(huge)
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS // 2  # PIL's setting is left as it was


def test_limit_is_featkits_not_pils(tmp_path):
    big = write_huge_png(tmp_path / "big.png", width=10_000, height=10_000)  # 100 MP: PIL only warns
    with pytest.raises(ImageTooLargeError, match="over the limit of 50,000,000"):
        decode_image(big, max_pixels=50_000_000)
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    with pytest.raises(ImageTooLargeError, match="64x64"):
        decode_image(small, max_pixels=4095)
    assert decode_image(small, max_pixels=4096).size == (64, 64)
    assert decode_image(small, max_pixels=0).size == (64, 64)
    huge = write_huge_png(tmp_path / "huge.png")
    with pytest.raises(OSError, match="truncated"):  # above PIL's threshold, and allowed: decoded
        decode_image(huge, max_pixels=300_000_000)
    with pytest.raises(ValueError, match="max_pixels must be >= 0"):
        decode_image(small, max_pixels=-1)


# -- readers and extraction ---------------------------------------------------------------------


def test_imagefolder_reader_decodes_every_mode(messy_folder):
    root, cases = messy_folder
    ds = open_dataset("imagefolder", root)
    by_id = {s.sample_id: s for s in ds.samples("test")}
    for case, messy_id, _ in cases:
        np.testing.assert_array_equal(np.asarray(ds.load_image(by_id[messy_id])), case.expected)
    assert any("," in i for i in by_id) and any(not i.isascii() for i in by_id)


@pytest.mark.parametrize("model", MODELS)
def test_every_family_gets_the_same_pixels(model, messy_folder, tmp_path):
    """Each messy file gives exactly the features of its RGB reference, for every kind."""
    root, cases = messy_folder
    summary, = featkit.extract(model, "imagefolder", data_root=root, splits=["test"],
                               cache_dir=tmp_path, progress=False, num_workers=0, device="cpu")
    assert summary.n == 2 * len(cases) and not summary.skipped
    for kind in summary.dims:
        fs = load_file(summary.path, kind)
        assert np.isfinite(fs.features).all()
        row = {sample_id: i for i, sample_id in enumerate(fs.sample_ids)}
        for case, messy_id, reference_id in cases:
            np.testing.assert_array_equal(fs.features[row[messy_id]], fs.features[row[reference_id]],
                                          err_msg=f"{model} {kind} {case.name}")


def _folder_with_huge_image(root: Path) -> tuple[Path, str]:
    make_imagefolder(root, n_classes=2, train_per_class=2, test_per_class=2)
    huge = write_huge_png(root / "test" / "cat" / "huge.png")
    return huge, "test/cat/huge.png"


def test_extract_names_an_oversized_image_and_skip_bad_leaves_it_out(tmp_path):
    huge, huge_id = _folder_with_huge_image(tmp_path / "data")
    common = dict(data_root=tmp_path / "data", splits=["test"], cache_dir=tmp_path / "cache",
                  progress=False, num_workers=0)
    with pytest.raises(BadImageError, match=rf"1 unreadable image\(s\) .*{huge}: 20000x10000 image") as info:
        featkit.extract("pixels:8", "imagefolder", **common)
    assert "\n" not in str(info.value) and "--skip-bad" in str(info.value)
    summary, = featkit.extract("pixels:8", "imagefolder", skip_bad=True, **common)
    assert summary.skipped == [huge_id] and summary.n == 4


def test_lowered_max_pixels_makes_ordinary_images_bad(tmp_path):
    make_imagefolder(tmp_path / "data", n_classes=2, train_per_class=2, test_per_class=2)
    common = dict(data_root=tmp_path / "data", splits=["test"], progress=False, num_workers=0)
    with pytest.raises(BadImageError, match=r"4 unreadable image\(s\).*32x32 image \(1,024 pixels\) is over the limit of 1,000"):
        featkit.extract("pixels:8", "imagefolder", max_pixels=1000, cache_dir=tmp_path / "a", **common)
    summary, = featkit.extract("pixels:8", "imagefolder", max_pixels=0, cache_dir=tmp_path / "b", **common)
    assert summary.n == 4
    with pytest.raises(FeatkitError, match="--max-pixels must be >= 0"):
        featkit.extract("pixels:8", "imagefolder", max_pixels=-1, cache_dir=tmp_path / "c", **common)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "featkit", *args], capture_output=True, text=True, env=env)


def test_cli_max_pixels_is_one_line_then_skip_bad_goes_on(tmp_path):
    huge, huge_id = _folder_with_huge_image(tmp_path / "data")
    args = ["extract", "--model", "pixels:8", "--dataset", "imagefolder", "--data-root", str(tmp_path / "data"),
            "--splits", "test", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--num-workers", "0"]
    result = _cli(*args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("featkit: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert str(huge) in errors[0] and "over the limit" in errors[0] and "--skip-bad" in errors[0]
    result = _cli(*args, "--skip-bad", "--max-pixels", "100000000")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert featkit.load("pixels:8", "imagefolder", "test", cache_dir=tmp_path / "cache").meta["skipped_ids"] == [huge_id]


def test_a_non_default_pixel_limit_is_part_of_the_cache_key(tmp_path):
    """Which images are too large decides which rows a file holds: a lower --max-pixels run
    gets its own file, and the default keeps the keys it had."""
    import featkit
    from featkit.testing.datasets import make_imagefolder

    folder = make_imagefolder(tmp_path / "f", n_classes=2, train_per_class=3, test_per_class=2)
    cache = tmp_path / "cache"
    kwargs = dict(data_root=folder.root, splits=["test"], cache_dir=cache, progress=False,
                  num_workers=0)
    default = featkit.extract("pixels:8", "imagefolder", **kwargs)[0]
    limited = featkit.extract("pixels:8", "imagefolder", max_pixels=10_000, **kwargs)[0]
    assert default.path != limited.path
    assert "max_pixels" not in featkit.load_file(default.path).meta["key_fields"]["settings"]
    assert featkit.load_file(limited.path).meta["key_fields"]["settings"]["max_pixels"] == 10_000
