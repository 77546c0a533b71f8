"""Every analysis command writes the record it wrote before the task layer (issue 14).

The reference records in ``data/records/`` were written by the commands of the code before the
restructuring, on the same tiny caches. Paths under the temporary folders, creation times and
library versions are masked; floats compare to 1e-6 relative. Fields the old code got wrong and
the new code fixes are listed in :data:`CHANGED` with the reason, and nowhere else.

Regenerate (only when a change to a record is intended and listed in the closing note):
``FEATKIT_WRITE_RECORDS=1 python -m pytest tests/featkit/test_records_unchanged.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

import featkit
from featkit.cli import main
from featkit.testing.datasets import make_imagefolder

DATA = Path(__file__).parent / "data" / "records"
WRITE = os.environ.get("FEATKIT_WRITE_RECORDS") == "1"
#: provenance fields that differ between two identical runs (``key`` hashes the temporary data
#: root; its inputs, ``key_fields``, are compared)
VOLATILE = {"created_at", "library_versions", "key"}
#: record paths (dotted) the task layer changed on purpose: path -> why
CHANGED: dict[str, str] = {
    "warnings": "new field (issue 15): what a reader must know, e.g. C at the edge of its grid",
    "provenance.key_fields.samples": "issue 15: the split-contents digest includes each image "
    "file's size and mtime, so it differs per run for the generated imagefolder (digits, with no "
    "files, keeps its digest: pinned in test_cache.py)",
    "provenance.datasets.imagefolder.key_fields.samples": "issue 15: as provenance.key_fields.samples",
    "per_item": "new field (issue 18): the per-item scores behind each interval-able metric "
    "(0/1 correctness as packed bits, per-query AP as float32), so intervals and paired "
    "comparisons are recomputed without features",
    "ci": "new field (issue 18), only with --ci: percentile bootstrap intervals",
    "**.layer_depths": "new field (issue 16) of every cache file's provenance, wherever a record "
    "quotes one: each tower's depth, so cls@12 and cls@-1 name the same stored block",
}

GRID = "0.1,1,10,100"
CASES: dict[str, list[str]] = {
    "retrieval-loo": ["retrieval", "--model", "test:tiny-clip", "--dataset", "digits"],
    "retrieval-gallery": ["retrieval", "--model", "pixels:8", "--dataset", "digits",
                          "--gallery-split", "train", "--metric", "euclidean"],
    "linear": ["probe", "linear", "--model", "test:tiny-clip", "--dataset", "digits",
               "--c-grid", GRID],
    "linear-standardize": ["probe", "linear", "--model", "pixels:8", "--dataset", "digits",
                           "--normalization", "standardize", "--c-grid", GRID,
                           "--no-refit-on-val"],
    "linear-label-map": ["probe", "linear", "--model", "pixels:8", "--dataset", "digits",
                         "--c-grid", GRID, "--label-map", "{label_map}"],
    "linear-merge": ["probe", "linear", "--model", "pixels:8", "--dataset", "digits,imagefolder",
                     "--merge", "--c-grid", GRID],
    "linear-two": ["probe", "linear", "--model", "pixels:8", "--dataset", "digits,imagefolder",
                   "--c-grid", GRID],
    "knn": ["probe", "knn", "--model", "test:tiny-clip", "--dataset", "digits",
            "--features", "aligned"],
    "knn-merge": ["probe", "knn", "--model", "pixels:8", "--dataset", "digits,imagefolder",
                  "--merge", "--k", "1,5", "--train-only"],
    "knn-label-map": ["probe", "knn", "--model", "pixels:8", "--dataset", "digits", "--k", "3",
                      "--label-map", "{label_map}"],
    "perturb-feature": ["perturb", "--model", "test:tiny-clip", "--dataset", "digits",
                        "--steps", "5", "--eps", "0,0.01,0.05", "--eps-rel", "--c-grid", GRID],
    "perturb-l2-target": ["perturb", "--model", "pixels:8", "--dataset", "digits", "--norm", "l2",
                          "--steps", "3", "--eps", "0,0.5", "--target", "least-likely",
                          "--random-start", "--c-grid", GRID],
    "perturb-image": ["perturb", "--model", "pixels:8", "--dataset", "imagefolder",
                      "--space", "image", "--steps", "2", "--eps", "0,8/255", "--c-grid", GRID,
                      "--batch-size", "4"],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    cache = root / "cache"
    folder = make_imagefolder(root / "imagefolder", n_classes=3, train_per_class=8,
                              val_per_class=3, test_per_class=4)
    for model in ("test:tiny-clip", "pixels:8"):
        featkit.extract(model, "digits", cache_dir=cache, progress=False, num_workers=0)
    featkit.extract("pixels:8", "imagefolder", data_root=folder.root, cache_dir=cache,
                    progress=False, num_workers=0)
    label_map = root / "map.json"
    label_map.write_text(json.dumps({"8": "3", "9": "4"}))
    return {"root": root, "cache": cache, "label_map": label_map}


def _mask(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_mask(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<TMP>")
    return value


def _drop(record: Any, dotted: str) -> None:
    """Remove the field at ``dotted``; ``**.name`` removes ``name`` at every depth."""
    if dotted.startswith("**."):
        name = dotted[3:]
        if isinstance(record, dict):
            record.pop(name, None)
        for value in record.values() if isinstance(record, dict) else record if isinstance(record, list) else ():
            _drop(value, dotted)
        return
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(record, dict) or part not in record:
            return
        record = record[part]
    if isinstance(record, dict):
        record.pop(last, None)


def _compare(got: Any, want: Any, where: str = "record") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = []
        if list(got) != list(want):
            diffs.append(f"{where}: keys {list(got)} != {list(want)}")
        for key in want:
            if key in got:
                diffs += _compare(got[key], want[key], f"{where}.{key}")
        return diffs
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: length {len(got)} != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _compare(g, w, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            return []
        return [f"{where}: {got!r} != {want!r}"]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} != {want!r}"]


@pytest.mark.parametrize("case", list(CASES))
def test_command_writes_the_record_it_wrote_before(case, workspace, capsys):
    out = workspace["root"] / f"{case}.json"
    argv = [a.format(label_map=workspace["label_map"]) for a in CASES[case]]
    argv += ["--cache-dir", str(workspace["cache"]), "--json", str(out), "--no-progress"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    got = _mask(json.loads(out.read_text()), str(workspace["root"]))
    reference = DATA / f"{case}.json"
    if WRITE:
        reference.parent.mkdir(parents=True, exist_ok=True)
        reference.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip("reference written")
    want = json.loads(reference.read_text())
    for dotted in CHANGED:
        for record in (got if isinstance(got, list) else [got]):
            _drop(record, dotted)
        for record in (want if isinstance(want, list) else [want]):
            _drop(record, dotted)
    diffs = _compare(got, want)
    assert not diffs, "\n".join(diffs[:20])
