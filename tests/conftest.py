"""Shared pytest fixtures: a per-session cache of the tiny demo features."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """One thread: the tiny test problems are far slower with thread hand-offs than without,
    above all on a loaded 2-core machine."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # BLAS/OpenMP of NumPy and scikit-learn too


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """Cache dir holding ``test:tiny-clip`` and ``pixels:8`` features of digits (all splits)."""
    from featkit.extraction import extract

    root = tmp_path_factory.mktemp("digits_cache")
    for model in ("test:tiny-clip", "pixels:8"):
        extract(model, "digits", cache_dir=root, progress=False, num_workers=0)
    return root
