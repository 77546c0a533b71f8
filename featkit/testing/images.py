"""Messy real-world images for decode tests: every PIL mode the readers meet, with the RGB
pixels featkit's decode path (:mod:`featkit.datasets.images`) must return for each.

:func:`write_messy_images` writes one file per case (greyscale and 16-bit PNGs, float and
32-bit TIFFs, palette PNGs and GIFs with transparency, RGBA, CMYK JPEG and TIFF, bilevel, a PNG
named ``.JPEG``, an EXIF-rotated photo, names with commas and non-ASCII characters) and says
what each must decode to, computed from the source arrays by the documented rules (not by the
decode path itself). :func:`write_huge_png` writes a PNG whose header declares a huge size in a
few bytes; :func:`write_messy_imagefolder` lays the cases out as an ``imagefolder`` dataset next
to lossless RGB references of their expected pixels, so a test can check that every model
family gives the same features for a messy file and for its reference.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MessyImage",
    "write_huge_png",
    "write_messy_imagefolder",
    "write_messy_images",
]

#: (width, height) of the generated images; not square, so a rotation would show in the size
SIZE = (24, 20)
WHITE = 255


@dataclass(frozen=True)
class MessyImage:
    """One generated file: the case ``name``, the PIL ``mode`` it opens in, its ``path`` and
    the ``expected`` H x W x 3 uint8 pixels the decode path must return, exactly."""

    name: str
    mode: str
    path: Path
    expected: np.ndarray


def _grey(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth gradient plus noise, so resizing and every pixel matter."""
    height, width = shape
    ramp = np.add.outer(np.linspace(0, 1, height), np.linspace(0, 1, width)) / 2
    return np.clip(ramp + rng.normal(0, 0.1, shape), 0, 1)


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour over white where ``alpha`` is 0 or 255 (exact; partial alpha rounds)."""
    return np.where(alpha[..., None] == 255, colour, WHITE).astype(np.uint8)


def write_messy_images(folder: str | os.PathLike, seed: int = 0) -> list[MessyImage]:
    """Write every case into ``folder`` and return them (see the module docstring)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = SIZE
    shape = (height, width)
    cases: list[MessyImage] = []

    def add(name: str, filename: str, image, expected: np.ndarray, **save) -> None:
        path = folder / filename
        image.save(path, **save)
        with Image.open(path) as opened:
            mode = opened.mode
        cases.append(MessyImage(name, mode, path, expected.astype(np.uint8)))

    colour = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    add("rgb", "rgb.png", Image.fromarray(colour, "RGB"), colour)

    grey8 = np.rint(_grey(shape, rng) * 255).astype(np.uint8)
    add("grey", "grey.png", Image.fromarray(grey8, "L"), _rgb(grey8))

    alpha = np.where(rng.random(shape) < 0.3, 0, 255).astype(np.uint8)
    add("grey_alpha", "grey_alpha.png", Image.fromarray(np.dstack([grey8, alpha]), "LA"),
        _composite(_rgb(grey8), alpha))
    add("rgba", "rgba.png", Image.fromarray(np.dstack([colour, alpha]), "RGBA"),
        _composite(colour, alpha))

    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, shape, dtype=np.uint8)
    indices[0, 0] = 0
    paletted = Image.fromarray(indices, "P")
    paletted.putpalette(palette.ravel().tolist())
    add("palette", "palette.png", paletted, palette[indices])
    see_through = palette[indices].copy()
    see_through[indices == 0] = WHITE
    add("palette_transparent", "palette_transparent.png", paletted, see_through, transparency=0)
    add("gif_transparent", "transparent.gif", paletted, see_through, transparency=0)

    bits = rng.random(shape) < 0.5
    add("bilevel", "bilevel.png", Image.fromarray(np.where(bits, 255, 0).astype(np.uint8)).convert("1"),
        _rgb(np.where(bits, 255, 0)))

    cmyk = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    cmyk_image = Image.fromarray(cmyk, "CMYK")
    add("cmyk_tiff", "cmyk.tif", cmyk_image, np.asarray(cmyk_image.convert("RGB")))
    cmyk_jpeg = folder / "cmyk.jpg"
    cmyk_image.save(cmyk_jpeg, quality=95)
    with Image.open(cmyk_jpeg) as decoded:  # lossy: what PIL decodes, converted by PIL's rule
        cases.append(MessyImage("cmyk_jpeg", decoded.mode, cmyk_jpeg, np.asarray(decoded.convert("RGB"))))

    grey16 = rng.integers(0, 65536, shape).astype(np.uint16)
    grey16[0, :2] = (0, 65535)
    by_range = _rgb(np.rint(grey16 * (255.0 / 65535.0)))
    add("grey16_png", "grey16.png", Image.fromarray(grey16), by_range)
    add("grey16_tiff", "grey16.tif", Image.fromarray(grey16), by_range)
    add("grey16_big_endian_tiff", "grey16_be.tif",
        Image.frombytes("I;16B", SIZE, grey16.astype(">u2").tobytes()), by_range)
    pgm = folder / "grey16.pgm"  # maxval 1000: PIL widens it to mode I, rescaled to 0..65535
    small = (grey16 // 66).astype(np.int64)
    pgm.write_bytes(b"P5\n%d %d\n1000\n" % SIZE + small.astype(">u2").tobytes())
    widened = np.rint(small * 65535 / 1000)
    cases.append(MessyImage("grey16_pgm", "I", pgm, _rgb(np.rint(widened * (255.0 / 65535.0))).astype(np.uint8)))

    signed = rng.integers(-70000, 90000, shape).astype(np.int32)
    add("int32_tiff", "int32.tif", Image.fromarray(signed),
        _rgb(np.rint((signed - signed.min()) * (255.0 / (signed.max() - signed.min())))))

    floats = (_grey(shape, rng) * 10 - 3).astype(np.float32)
    add("float_tiff", "float.tif", Image.fromarray(floats),
        _rgb(np.rint((floats.astype(np.float64) - floats.min()) * (255.0 / (float(floats.max()) - float(floats.min()))))))
    unit = _grey(shape, rng).astype(np.float32)  # 0..1 data, which PIL's own conversion turns black
    add("float_unit_tiff", "float_unit.tif", Image.fromarray(unit),
        _rgb(np.rint((unit.astype(np.float64) - unit.min()) * (255.0 / (float(unit.max()) - float(unit.min()))))))

    add("png_named_jpeg", "png_named.JPEG", Image.fromarray(colour, "RGB"), colour, format="PNG")

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": not applied, the stored pixels are the features
    add("exif_rotated", "exif_rotated.png", Image.fromarray(colour, "RGB"), colour, exif=exif)

    add("comma_name", "with, comma.png", Image.fromarray(grey8, "L"), _rgb(grey8))
    add("non_ascii_name", "ñandú_日本_é.png", Image.fromarray(colour, "RGB"), colour)
    return cases


def write_huge_png(path: str | os.PathLike, width: int = 20_000, height: int = 10_000) -> Path:
    """A greyscale PNG whose header declares ``width x height`` pixels (200 MP by default, over
    PIL's decompression-bomb limit) in a few hundred bytes: it opens, its pixel data is short."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x80" * 64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def write_messy_imagefolder(root: str | os.PathLike, seed: int = 0) -> list[tuple[MessyImage, str, str]]:
    """An ``imagefolder`` at ``root``: ``train/{plain,other}/`` with two RGB images each, and a
    ``test`` split holding every messy case under ``test/messy/`` and a lossless RGB PNG of its
    expected pixels under ``test/reference/``. Returns ``(case, messy id, reference id)`` with
    the sample ids (paths relative to ``root``)."""
    from PIL import Image

    from featkit.testing.datasets import class_image

    root = Path(root)
    for label, name in enumerate(("plain", "other")):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for index in range(2):
            class_image(label, index, size=SIZE[0]).save(root / "train" / name / f"{index}.png")
    cases = write_messy_images(root / "test" / "messy", seed=seed)
    (root / "test" / "reference").mkdir(parents=True, exist_ok=True)
    out = []
    for case in cases:
        reference = root / "test" / "reference" / f"{case.name}.png"
        Image.fromarray(case.expected, "RGB").save(reference)
        out.append((case, case.path.relative_to(root).as_posix(), reference.relative_to(root).as_posix()))
    return out
