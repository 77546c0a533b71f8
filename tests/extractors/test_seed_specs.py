"""The seed models' declared specs (``extractors/open_clip_seeds.py``, ``extractors/timm_seeds.py``)
equal what each family's ``_describe`` computes from a meta-device build, field by field (the
preprocessing is part of the cache key), and describing or listing them imports none of the model
libraries.

When a library upgrade or a new seed changes them, rewrite both tables with
``python tests/extractors/test_seed_specs.py --write`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "open_clip", "timm", "transformers")
#: the keys of open_clip's pretrained config that say where a tag's weights live
LOCATION_KEYS = ("file", "hf_hub", "url")
ROOT = Path(__file__).resolve().parents[2]


def _open_clip_described() -> tuple[list, dict]:
    """(specs, weight locations) of the open_clip seeds, from the library (meta-device towers)."""
    import open_clip

    from extractors import open_clip as oc

    pairs = list(oc.SEED_MODELS.values())
    specs = [oc._describe.__wrapped__(name, tag) for name, tag in pairs]
    locations = {}
    for name, tag in pairs:
        cfg = open_clip.get_pretrained_cfg(name, tag)
        locations[(name, tag)] = {key: cfg.get(key) for key in LOCATION_KEYS}
    return specs, locations


def _timm_described() -> list:
    from extractors import timm as tf

    return [tf._describe.__wrapped__(name) for name in tf.SEED_MODELS.values()]


def test_open_clip_seed_specs_equal_describe():
    pytest.importorskip("open_clip")
    from extractors import get_spec, open_clip_seeds
    from extractors import open_clip as oc

    specs, locations = _open_clip_described()
    assert list(open_clip_seeds.SPECS) == specs
    assert open_clip_seeds.PRETRAINED == locations
    family = oc.OpenClipFamily()
    for spec, (alias, (name, tag)) in zip(specs, oc.SEED_MODELS.items()):
        assert get_spec(alias) == spec
        assert family.resolve(f"{name}:{tag.upper()}") == spec  # tags match as in _describe


def test_timm_seed_specs_equal_describe():
    pytest.importorskip("timm")
    from extractors import get_spec, timm_seeds
    from extractors import timm as tf

    specs = _timm_described()
    assert list(timm_seeds.SPECS) == specs
    for spec, alias in zip(specs, tf.SEED_MODELS):
        assert get_spec(alias) == spec


def test_torch_hub_dir_follows_torch(monkeypatch, tmp_path):
    """The hub directory found without torch is the one torch itself uses."""
    torch_hub = pytest.importorskip("torch.hub")
    from extractors import timm as tf

    for variable in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    assert tf.hub_dir_from_environment() == torch_hub.get_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tf.hub_dir_from_environment() == torch_hub.get_dir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert tf.hub_dir_from_environment() == torch_hub.get_dir()


LIGHT = f"""
import contextlib, io, sys
from featkit.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    assert main(["list", "models"]) == 0
from extractors import ALIASES, families, get_spec
for alias in ALIASES:
    assert alias in out.getvalue(), alias
    spec = get_spec(alias)
    families()[spec.family].weights_available(spec)
heavy = [m for m in {HEAVY!r} if m in sys.modules]
assert not heavy, heavy
"""


def test_listing_and_describing_seeds_imports_no_model_library(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    subprocess.run([sys.executable, "-c", LIGHT], check=True, env=env, cwd=ROOT)


# -- rewriting the tables -------------------------------------------------------------------------

_HEADER = '''"""The {family} seed models' specs as data, so that describing and listing them imports nothing
heavy: what ``extractors.{family}._describe`` computes for each of ``SEED_MODELS``, {what}.

Written by ``python tests/extractors/test_seed_specs.py --write``; that test file checks every
entry against ``_describe``, so change ``SEED_MODELS`` and rewrite, never edit by hand.
"""

from __future__ import annotations

from extractors.base import ExtractorSpec, Preprocessing
from extractors.layers import LayerSpan

'''


def _write(path: Path, text: str) -> None:
    formatted = subprocess.run(
        ["ruff", "format", "--stdin-filename", str(path), "-"], input=text, text=True,
        capture_output=True, check=True, cwd=ROOT,
    ).stdout
    path.write_text(formatted)


def write_tables() -> None:
    """Rewrite both seed tables from the libraries."""
    specs, locations = _open_clip_described()
    _write(ROOT / "extractors" / "open_clip_seeds.py", _HEADER.format(
        family="open_clip", what="dims from\na meta-device tower, preprocessing from the tag")
        + f"#: canonical id order as in SEED_MODELS\nSPECS: tuple[ExtractorSpec, ...] = {tuple(specs)!r}\n\n"
        + "#: (model name, tag) -> where open_clip's pretrained config says the weights live\n"
        + f"PRETRAINED: dict[tuple[str, str], dict[str, str | None]] = {locations!r}\n")
    _write(ROOT / "extractors" / "timm_seeds.py", _HEADER.format(
        family="timm", what="dims from a\nmeta-device model, preprocessing from the tag's data config")
        + f"#: canonical id order as in SEED_MODELS\nSPECS: tuple[ExtractorSpec, ...] = {tuple(_timm_described())!r}\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write")
    write_tables()
