"""``featkit compare`` without ``--metric`` on a task whose headline metric is recomputed per
resample (pairs' ROC-AUC): it compares the first per-item metric and says so."""

from __future__ import annotations

import json

import numpy as np

from featkit.cli import main
from featkit.tasks.compare import compare_records
from featkit.tasks.intervals import ItemScores, per_item_record


def _record(model: str, correct: np.ndarray) -> dict:
    ids = [f"pair{i}" for i in range(len(correct))]
    return {"task": "pairs", "dataset": "digits", "model": model,
            "metrics": {"roc_auc": 0.9, "accuracy": float(correct.mean())},
            "per_item": per_item_record({"accuracy": ItemScores.of(correct, ids, unit="pairs")}),
            "recomputed_metrics": {"roc_auc": "pairs resampled within same and different pairs"}}


def test_the_headline_falls_back_with_a_note(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a, b = _record("m1", rng.random(200) < 0.8), _record("m2", rng.random(200) < 0.6)
    comparison = compare_records(a, b)
    assert comparison.metric == "accuracy"
    assert "headline roc_auc is recomputed" in comparison.note
    assert comparison.row()["note"] == comparison.note
    assert compare_records(a, b, "accuracy").note == ""  # asked for: nothing to say
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "note: the headline roc_auc is recomputed" in capsys.readouterr().out
