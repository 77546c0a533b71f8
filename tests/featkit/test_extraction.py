"""The model step of the pipeline: CUDA out-of-memory back-off (simulated on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.errors import FeatkitError
from featkit.extraction import _forward


class _OOMAbove:
    """Raises CUDA OOM for batches larger than ``limit``; records the sizes it was called with."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, images, kinds):
        self.calls.append(len(images))
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        return {"visual": images.flatten(1) * 2}


def test_out_of_memory_halves_the_batch_and_remembers_it():
    images = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    extractor, limits = _OOMAbove(limit=2), {}
    out = _forward(extractor, images, ["visual"], "cpu", "fp32", limits)
    np.testing.assert_array_equal(out["visual"], images.numpy() * 2)
    assert limits["batch"] == 2 and extractor.calls == [8, 4, 2, 2, 2, 2]
    extractor.calls.clear()
    _forward(extractor, images, ["visual"], "cpu", "fp32", limits)
    assert extractor.calls == [2, 2, 2, 2]  # later batches start at the remembered size


def test_out_of_memory_on_one_image_is_a_clear_error():
    with pytest.raises(FeatkitError, match="single image"):
        _forward(_OOMAbove(limit=0), torch.zeros(4, 3), ["visual"], "cpu", "fp32", {})


# -- declared options through the command line ---------------------------------------------------


def _cli_error(capsys, *args: str) -> str:
    from featkit.cli import main

    code = main(["extract", "--dataset", "digits", "--splits", "val", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("featkit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_option_is_one_line_with_a_suggestion(capsys, tmp_path):
    line = _cli_error(capsys, "--model", "test:tiny-dinov2", "--option", "image_sise=28", "--cache-dir", str(tmp_path))
    assert "unknown option 'image_sise'" in line and "did you mean image_size?" in line
    assert not any(tmp_path.iterdir())  # refused before anything was extracted


def test_option_of_the_wrong_type_is_one_line(capsys, tmp_path):
    line = _cli_error(capsys, "--model", "test:tiny-dinov2", "--option", "image_size=abc", "--cache-dir", str(tmp_path))
    assert "image_size='abc'" in line and "expected an integer" in line and "image_size (int)" in line


def test_adapter_for_a_model_without_adapters_is_one_line(capsys, tmp_path):
    line = _cli_error(capsys, "--model", "test:tiny-clip", "--adapter", str(tmp_path), "--cache-dir", str(tmp_path))
    assert "test:tiny-clip cannot apply an adapter" in line and "test:tiny-llava" in line
    assert not any(tmp_path.iterdir())  # nothing cached under a key without the adapter


def test_instruction_for_a_model_without_text_is_one_line(capsys, tmp_path):
    line = _cli_error(capsys, "--model", "pixels:8", "--instruction", "Represent it.", "--cache-dir", str(tmp_path))
    assert "unknown option 'instruction' for pixels:8" in line


def test_accepted_option_is_part_of_the_cache_key(tmp_path):
    from featkit.extraction import extract

    common = dict(splits=["val"], cache_dir=tmp_path, progress=False, num_workers=0)
    plain = extract("test:tiny-dinov2", "digits", **common)[0]
    sized = extract("test:tiny-dinov2", "digits", options={"image_size": "28"}, **common)[0]
    again = extract("test:tiny-dinov2", "digits", options={"image_size": 28}, **common)[0]
    assert sized.path != plain.path and again.path == sized.path and again.cached


def test_without_splits_extract_takes_the_datasets_own(tmp_path):
    """A shifted test set has only a test split: extract reads what the dataset has."""
    import featkit
    from featkit.testing.imagenet import MAKERS

    made = MAKERS["imagenet-r"](tmp_path / "r")
    summaries = featkit.extract("pixels:8", "imagenet-r", data_root=made.root,
                                cache_dir=tmp_path / "cache", progress=False, num_workers=0)
    assert [s.split for s in summaries] == ["test"]
