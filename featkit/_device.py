"""The one device resolver: ``None``/``"auto"`` -> CUDA when torch sees it, else CPU.

Like :mod:`featkit.errors` and :mod:`featkit._imports` this is a leaf helper that ``extractors/``
and ``probes/`` may import; everything that takes a ``device`` argument resolves it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import torch

AUTO = "auto"


def resolve_device(device: str | torch.device | None = AUTO) -> str:
    """The device to run on, as a string torch accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    ``None`` and ``"auto"`` pick CUDA when torch sees a device, else the CPU. An unknown name,
    or CUDA asked for where there is none, is a one-line :class:`FeatkitError`.
    """
    import torch

    if device is None or device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise FeatkitError(f"--device {name!r} is not a device torch knows; use cpu, cuda, "
                           f"cuda:N or auto") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise FeatkitError(f"--device {name} requested but torch sees no CUDA device; use "
                           f"--device cpu")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise FeatkitError(f"--device {name!r}: featkit runs on cpu, cuda or auto")
    return name


def torch_device(device: str | torch.device | None = AUTO) -> torch.device:
    """:func:`resolve_device` as a ``torch.device``."""
    import torch

    return torch.device(resolve_device(device))
