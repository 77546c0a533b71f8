"""Input checks every probe shares: a probe refuses features it would score silently wrong."""

from __future__ import annotations

import numpy as np

from featkit.errors import FeatkitError


def check_finite(features: np.ndarray, name: str = "features") -> None:
    """Refuse NaN or infinite values with one line: how many rows, and the first few."""
    array = np.asarray(features)
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    rows = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    # A float64 row sum of finite float32 values cannot overflow: finite iff every value is.
    bad = np.flatnonzero(~np.isfinite(rows.sum(axis=1, dtype=np.float64)))
    if bad.size:
        first = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
        raise FeatkitError(f"{name}: {bad.size} of {len(rows)} rows contain NaN or infinite "
                           f"values (rows {first}); re-extract or drop those rows")
