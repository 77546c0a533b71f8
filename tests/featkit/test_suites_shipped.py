"""The suites shipped with featkit plan without errors, name FG-BMK's 12 datasets and carry
the seeds' published values; the tiny suite runs offline (it is what ``featkit demo`` runs)."""

from __future__ import annotations

import json

import pytest

from featkit.suite import build_plan, load_suite, shipped_suites


@pytest.fixture(autouse=True)
def _registry_restored():
    """Suites register their dataset aliases (fgbmk-cub, ...) in the process's dataset
    registry; other tests list that registry, so each test here leaves it as it found it."""
    import featkit.datasets as datasets

    datasets.list_datasets()
    readers, descriptions = dict(datasets._READERS), dict(datasets._DESCRIPTIONS)
    yield
    datasets._READERS.clear()
    datasets._READERS.update(readers)
    datasets._DESCRIPTIONS.clear()
    datasets._DESCRIPTIONS.update(descriptions)


FGBMK_DATASETS = {"wine", "deepfashion", "skincon", "flowers102", "food101", "aircraft",
                  "stanforddog", "stanfordcar", "cub", "vegfru", "products10k", "inat2021"}


def test_every_shipped_suite_is_listed():
    assert {"tiny", "fgbmk", "shift", "zeroshot-mc"} <= set(shipped_suites())


@pytest.mark.parametrize("name", sorted(shipped_suites()))
def test_every_shipped_suite_plans(name, tmp_path):
    plan = build_plan(load_suite(name, out=tmp_path / "out"))
    assert plan.cells and all(plan.status(c) == "todo" for c in plan.cells)
    assert not (tmp_path / "out").exists()


def test_the_fgbmk_suite_covers_its_study():
    suite = load_suite("fgbmk")
    names = {d.name.removeprefix("fgbmk-") for d in suite.datasets}
    assert FGBMK_DATASETS <= names
    assert {d.reader for d in suite.datasets if d.name.startswith("fgbmk-")} == {"manifest"}
    plan = build_plan(suite)
    tasks = {c.task for c in plan.cells}
    assert {"extract", "retrieval", "linear_probe", "fgbmk_linear", "fgbmk_retrieval",
            "perturb"} <= tasks
    assert any(c.task == "linear_probe" and len(c.datasets) == 3 for c in plan.cells)  # merged
    assert {c.features[0] for c in plan.cells if c.label == "table4"} == {"visual", "aligned"}
    tables = {e.source.split(",")[0].split(" (")[0] for e in suite.expected}
    assert tables == {"FG-BMK Table 3", "FG-BMK Table 4", "FG-BMK Table 5"}
    table5 = {(e.model, e.dataset): e.percent for e in suite.expected
              if e.source == "FG-BMK Table 5"}
    assert table5[("eva02-clip-l", "fgbmk-cub")] == 88.95  # reference.md section 4


def test_expected_values_name_canonical_models(tmp_path):
    from featkit.suite.plan import build_plan as plan_of
    from featkit.suite.runner import _write_expected

    plan = plan_of(load_suite("fgbmk", out=tmp_path))
    _write_expected(plan)
    items = json.loads((tmp_path / "expected.json").read_text())["featkit_expected"]
    models = {i["model"] for i in items}
    assert "open_clip:EVA02-L-14:merged2b_s4b_b131k" in models
    assert all(0 < i["value"] < 1 for i in items)
