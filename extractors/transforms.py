"""Turn a :class:`Preprocessing` into a torchvision transform (PIL image -> CHW float tensor)."""

from __future__ import annotations

from extractors.base import Preprocessing


def build_transform(pre: Preprocessing):
    """Resize (shortest edge, or squash), centre crop, to tensor, normalise; RGB in any case."""
    from torchvision import transforms as T

    interp = {
        "bicubic": T.InterpolationMode.BICUBIC,
        "bilinear": T.InterpolationMode.BILINEAR,
        "nearest": T.InterpolationMode.NEAREST,
    }[pre.interpolation]
    scale = int(round(pre.size / pre.crop_pct))
    if pre.resize_mode == "squash":
        resize = T.Resize((scale, scale), interpolation=interp, antialias=True)
    else:
        resize = T.Resize(scale, interpolation=interp, antialias=True)
    return T.Compose(
        [
            to_rgb,
            resize,
            T.CenterCrop(pre.size),
            T.ToTensor(),
            T.Normalize(pre.mean, pre.std),
        ]
    )


def to_rgb(image):
    """The image in RGB (greyscale and palette images are converted; RGB ones pass through)."""
    return image if image.mode == "RGB" else image.convert("RGB")
