"""The one image decode path: a file becomes a fully loaded RGB PIL image, the same for every
model family, before any model transform sees it.

Every reader's ``load_image`` goes through :func:`decode_image` (files) or :func:`to_rgb`
(in-memory images), and extraction applies :func:`to_rgb` to whatever a reader returns, so the
families' transforms (open_clip, timm, the hf processors, ``pixels``) all receive the same
8-bit RGB pixels. The rules:

- **Format by content.** PIL identifies the format from the file's bytes; the extension is not
  consulted, so a PNG named ``.JPEG`` (ImageNet has some) decodes as the PNG it is. Animated
  files give their first frame.
- **Pixel limit.** An image whose header declares more than ``max_pixels`` pixels is refused
  before any pixel is decoded (:class:`ImageTooLargeError`, a bad image like an undecodable
  one). The default, :data:`DEFAULT_MAX_PIXELS` = 178,956,970, is the size at which PIL raises
  its ``DecompressionBombError`` (twice ``PIL.Image.MAX_IMAGE_PIXELS``); 0 means no limit.
- **Fully loaded**, so a truncated file fails here (``OSError``) and not inside a transform.
- **Modes to RGB** (:func:`to_rgb`):

  - ``RGB`` passes through unchanged; ``1``, ``L``, ``CMYK``, ``YCbCr`` and ``RGBX`` go through
    PIL's own ``convert("RGB")``, the conversion torchvision's and timm's loaders apply.
  - Transparency is composited on a **white** background: ``RGBA``, ``LA``, ``PA``, the
    premultiplied ``RGBa``/``La``, and ``P``, ``L`` or ``RGB`` images that carry a
    ``transparency`` key (palette PNGs, GIFs). Dropping the alpha channel instead would show the
    colour stored under transparent pixels, which is arbitrary (often black).
  - 16-bit integer modes (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``; 16-bit PNGs and TIFFs) are
    scaled by their **type's range**: ``round(v * 255 / 65535)``. PIL's own conversion clips
    every value above 255 to white.
  - ``I`` (32-bit integers; PIL widens 16-bit PGM/PPM data to it, rescaled to 0..65535): when
    every value lies in 0..65535 it is treated as 16-bit data (as above); otherwise it is
    scaled by its actual minimum and maximum, like ``F``.
  - ``F`` (32-bit float, e.g. float TIFFs) is scaled by the image's **actual** finite minimum
    and maximum to 0..255; non-finite pixels become 0 and a constant image is black. PIL's own
    conversion truncates the values, which turns 0..1 data black.
- **EXIF orientation is not applied.** torchvision's and timm's loaders, which the published
  numbers of the benchmarks featkit reproduces come from, read the stored pixels and ignore the
  orientation tag; applying ``ImageOps.exif_transpose`` would make features of rotated photos
  differ from those references. A photo stored sideways gives the features of the stored pixels.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: PIL's DecompressionBombError threshold (2 x ``PIL.Image.MAX_IMAGE_PIXELS``), the default limit.
DEFAULT_MAX_PIXELS = 178_956_970
#: What transparent pixels are composited on.
BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_PIL_LIMIT = threading.Lock()

__all__ = ["BACKGROUND", "DEFAULT_MAX_PIXELS", "ImageTooLargeError", "check_pixels", "decode_image", "to_rgb"]


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limit; refused before decoding."""


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` exceeds ``max_pixels`` (> 0)."""
    width, height = size
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} image ({width * height:,} pixels) is over the limit of "
            f"{max_pixels:,} pixels (--max-pixels; 0 lifts it)"
        )


def decode_image(source: str | os.PathLike | IO[bytes], *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> PILImage.Image:
    """Open ``source`` by content, refuse it if over ``max_pixels`` (0 = no limit), decode it
    fully and return it in RGB by the rules of this module. Undecodable files raise ``OSError``
    (PIL's errors), an unknown mode or an oversized image ``ValueError``."""
    if max_pixels < 0:
        raise ValueError(f"max_pixels must be >= 0 (0 = no limit), got {max_pixels}")
    with _open(source) as image:
        check_pixels(image.size, max_pixels)
        image.load()
        rgb = to_rgb(image)
        return rgb.copy() if rgb is image else rgb


@contextlib.contextmanager
def _open(source):
    """``Image.open`` with featkit's limit instead of PIL's: PIL's warning is silenced and, when
    PIL refuses the declared size, the header is read again with PIL's check lifted for that one
    call, so the caller's :func:`check_pixels` decides (and names the size) either way. Only the
    header is read here."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError:
            if not isinstance(source, (str, os.PathLike)):
                source.seek(0)
            with _PIL_LIMIT:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    image = Image.open(source)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    with image:
        yield image


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """``image`` as 8-bit RGB by the rules of this module (RGB images are returned as they are)."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _ALPHA or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I" or mode == "F":
        return Image.fromarray(_scaled_to_bytes(image), mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"image mode {mode} has no RGB conversion ({err})") from None


def _scaled_to_bytes(image: PILImage.Image) -> np.ndarray:
    """A single-channel 16-bit, 32-bit integer or float image as uint8, by the module's rules."""
    values = np.asarray(image)
    if image.mode in _SIXTEEN_BIT:
        return _to_bytes(values.astype(np.float64), 0.0, 65535.0)
    if image.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        return _to_bytes(values.astype(np.float64), 0.0, 65535.0)
    data = values.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    low, high = float(data[finite].min()), float(data[finite].max())
    data = np.where(finite, data, low)
    if high == low:
        return np.zeros(data.shape, np.uint8)
    return _to_bytes(data, low, high)


def _to_bytes(data: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.rint((data - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
