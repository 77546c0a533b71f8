"""Kept for ``benchmarks/bench_last_token.py`` and ``benchmarks/bench_adapt_memory.py``, which
import the tiny VLM builders from here; they live in :mod:`extractors.tiny` with every other
tiny test model."""

from __future__ import annotations

from extractors.tiny import build_tiny_llava, build_tiny_qwen2vl

__all__ = ["build_tiny_llava", "build_tiny_qwen2vl"]
