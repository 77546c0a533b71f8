"""Every probe refuses non-finite features in one line (issue 15: silent chance-level scores)."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes.knn import knn_probe
from probes.linear import LinearProbe, fit_linear_probe
from probes.perturb import eps_sweep


def _data(seed=0, n=40, d=5, classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % classes


def test_check_finite_counts_bad_rows():
    x, _ = _data()
    check_finite(x)
    x[[3, 7], 1] = np.nan
    x[9, 0] = np.inf
    with pytest.raises(FeatkitError, match=r"train features: 3 of 40 rows .*rows 3, 7, 9\)"):
        check_finite(x, "train features")
    check_finite(np.arange(4).reshape(2, 2))  # integers cannot be non-finite


@pytest.mark.parametrize("where", ["train", "val"])
def test_linear_probe_refuses_nan(where):
    x, y = _data()
    vx, vy = _data(1)
    (x if where == "train" else vx)[0, 0] = np.nan
    with pytest.raises(FeatkitError, match=f"{where} features: 1 of 40 rows"):
        fit_linear_probe(x, y, vx, vy, c_grid=[1.0], progress=False)


def test_knn_refuses_nan_in_bank_and_queries():
    x, y = _data()
    q, qy = _data(1)
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(FeatkitError, match="kNN bank features: 1 of 40"):
        knn_probe(bad, y, q, qy, ks=[3], progress=False)
    q[2] = -np.inf
    with pytest.raises(FeatkitError, match="kNN query features: 1 of 40"):
        knn_probe(x, y, q, qy, ks=[3], progress=False)


def test_pgd_refuses_nan_features():
    x, y = _data()
    probe = LinearProbe(np.ones((4, 5), np.float32), np.zeros(4, np.float32),
                        class_names=("a", "b", "c", "d"))
    x[1, 2] = np.nan
    with pytest.raises(FeatkitError, match="attacked features: 1 of 40"):
        eps_sweep(probe, x, y, [0.0, 0.1], progress=False)
