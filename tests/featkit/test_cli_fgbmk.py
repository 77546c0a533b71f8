"""``--protocol fgbmk`` of ``featkit retrieval`` and ``featkit probe linear``: the FG-BMK tasks'
records, settings from ``--fgbmk KEY=VALUE``, one-line errors for what FG-BMK cannot do."""

from __future__ import annotations

import json

import pytest

from featkit.cli import main
from featkit.tasks.fgbmk import linear, retrieval
from featkit.tasks.fgbmk.common import parse_pairs
from featkit.tasks.loading import FeatureSource

FAST = ["--fgbmk", "iterations=15", "--fgbmk", "batch_size=32", "--fgbmk",
        "learning_rates=0.01,0.05"]


def _strip(record):
    return {k: v for k, v in record.items() if k != "provenance"}


@pytest.mark.parametrize("command, module, extra", [
    (["probe", "linear"], linear, {}),
    (["retrieval"], retrieval, {"gallery_size": 200, "embed_dim": 8}),
])
def test_the_command_writes_the_task_record(digits_cache, tmp_path, capsys, command, module,
                                            extra):
    out = tmp_path / "r.json"
    more = [a for k, v in extra.items() for a in ("--fgbmk", f"{k}={v}")]
    code = main([*command, "--model", "pixels:8", "--dataset", "digits", "--protocol", "fgbmk",
                 *FAST, *more, "--cache-dir", str(digits_cache), "--no-progress",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "<- reported" in printed and "departures from the standard protocol" in printed
    settings = module.Settings(iterations=15, batch_size=32, learning_rates=(0.01, 0.05),
                               **extra)
    direct = module.run(FeatureSource("pixels:8", cache_dir=digits_cache), "digits", settings,
                        progress=False)
    assert _strip(json.loads(out.read_text())) == _strip(json.loads(json.dumps(direct)))


@pytest.mark.parametrize("argv, message", [
    (["probe", "linear", "--fgbmk", "iterations=3"], "--fgbmk settings apply to --protocol"),
    (["retrieval", "--fgbmk", "iterations=3"], "--fgbmk settings apply to --protocol"),
    (["probe", "linear", "--protocol", "fgbmk", "--merge", "--dataset", "digits,digits"],
     "without --merge"),
    (["retrieval", "--protocol", "fgbmk", "--fgbmk", "iteration=3"],
     "unknown setting 'iteration' (did you mean iterations?)"),
    (["retrieval", "--protocol", "fgbmk", "--fgbmk", "iterations"], "expected KEY=VALUE"),
])
def test_errors_are_one_line(digits_cache, capsys, argv, message):
    base = ["--model", "pixels:8", "--cache-dir", str(digits_cache), "--no-progress"]
    if "--dataset" not in argv:
        base += ["--dataset", "digits"]
    assert main([*argv, *base]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_pairs_parse_numbers_lists_and_none():
    assert parse_pairs(["iterations=20", "learning_rates=1e-3,5e-3", "patch_kind=patch_mean",
                        "device=none", "earlier_blocks=cls,"]) == {
        "iterations": 20, "learning_rates": (1e-3, 5e-3), "patch_kind": "patch_mean",
        "device": None, "earlier_blocks": ("cls",)}
