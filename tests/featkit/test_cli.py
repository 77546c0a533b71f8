"""The CLI: help on every subcommand, extraction, and one-line errors with non-zero exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featkit.cli import build_parser, main
from featkit.testing.datasets import make_imagefolder, write_truncated_jpeg

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "featkit", *args], capture_output=True, text=True, env=env, cwd=cwd)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("featkit: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]
    assert {"extract", "list", "info", "demo"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: featkit" in capsys.readouterr().out


def test_help_does_not_import_heavy_libraries():
    code = "import sys; from featkit.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'open_clip', 'transformers', 'timm', 'h5py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_model_suggests_close_names():
    _one_line_error(_cli("extract", "--model", "tiny-clip", "--dataset", "digits"), "unknown model 'tiny-clip'", "test:tiny-clip")


def test_unknown_dataset_suggests_close_names():
    _one_line_error(_cli("extract", "--model", "pixels:8", "--dataset", "digit"), "unknown dataset 'digit'", "digits")


def test_missing_data_names_root_and_expected_file(tmp_path):
    result = _cli("extract", "--model", "pixels:8", "--dataset", "manifest", "--data-root", str(tmp_path / "nowhere"))
    _one_line_error(result, "manifest", str(tmp_path / "nowhere"), "train.csv")
    assert result.returncode == 2


def _folder_with_truncated_jpeg(root: Path) -> tuple[Path, str]:
    generated = make_imagefolder(root, n_classes=2, train_per_class=3, test_per_class=3, ext="jpg")
    bad_id = generated.ids("test")[4]
    write_truncated_jpeg(root / bad_id)
    return root / bad_id, bad_id


def test_truncated_jpeg_stops_and_lists_it_then_skip_bad_goes_on(tmp_path):
    data = tmp_path / "data"
    bad, bad_id = _folder_with_truncated_jpeg(data)
    cache = tmp_path / "cache"
    args = ["extract", "--model", "pixels:8", "--dataset", "imagefolder", "--data-root", str(data), "--splits", "test", "--cache-dir", str(cache), "--no-progress"]
    _one_line_error(_cli(*args), "1 unreadable image(s)", str(bad), "--skip-bad")
    result = _cli(*args, "--skip-bad")
    assert result.returncode == 0, result.stderr
    import featkit

    fs = featkit.load("pixels:8", "imagefolder", "test", cache_dir=cache)
    assert len(fs) == 5 and bad_id not in fs.sample_ids
    assert fs.meta["skipped_ids"] == [bad_id]


def test_info_on_a_non_cache_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    _one_line_error(_cli("info", str(junk)), str(junk), "not a readable featkit cache file")


def test_extract_then_list_and_info(tmp_path):
    result = _cli("extract", "--model", "pixels:8", "--dataset", "digits", "--splits", "val", "--cache-dir", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "val" in result.stdout and "visual=192" in result.stdout
    again = _cli("extract", "--model", "pixels:8", "--dataset", "digits", "--splits", "val", "--cache-dir", str(tmp_path), "--no-progress")
    assert "cached" in again.stdout
    files = list(tmp_path.rglob("*.h5"))
    info = _cli("info", str(files[0]))
    assert info.returncode == 0 and "pixels:8" in info.stdout
    listing = _cli("list", "models")
    assert "test:tiny-clip" in listing.stdout and "pixels:8" in listing.stdout
    datasets = _cli("list", "datasets")
    assert "digits" in datasets.stdout and "imagefolder" in datasets.stdout
