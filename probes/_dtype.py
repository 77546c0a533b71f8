"""The one dtype resolver of the probes: ``"float32"``/``"float64"`` or a ``torch.dtype``."""

from __future__ import annotations

import torch

from featkit.errors import FeatkitError

#: The names a probe's ``dtype`` argument accepts.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``dtype`` as a ``torch.dtype``: a name from :data:`DTYPES`, or a ``torch.dtype`` as given.

    An unknown name is a one-line :class:`FeatkitError`, so a typo never falls back silently.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise FeatkitError(f"dtype must be float32 or float64, got {dtype!r}") from None
