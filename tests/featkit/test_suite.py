"""``featkit run SUITE``: the same records as the commands, reruns that do nothing, a killed run
that finishes with the same records, isolated failures, and plans checked before any work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.suite import build_plan, load_suite, run_suite

GRID = [0.1, 1, 10]
SUITE = """
name = "t"
out = "{out}"
cache_dir = "{cache}"

[extract]
num_workers = 0

[[models]]
id = "pixels:8"

[[models]]
id = "test:tiny-clip"
features = ["visual", "aligned"]

[[datasets]]
name = "digits"

[[tasks]]
task = "retrieval"

[[tasks]]
task = "linear_probe"
settings = {{ c_grid = {grid} }}

[[tasks]]
task = "knn"
models = ["test:tiny-clip"]
features = ["aligned"]
settings = {{ ks = [5] }}

[[tasks]]
task = "perturb"
models = ["pixels:8"]
settings = {{ steps = 3, eps = [0, 0.05], eps_rel = true, c_grid = {grid} }}
"""
#: The commands the suite's cells stand for (record path -> argv).
COMMANDS = {
    "pixels__8/digits/retrieval-visual.json": ["retrieval", "--model", "pixels:8"],
    "pixels__8/digits/linear_probe-visual.json": ["probe", "linear", "--model", "pixels:8",
                                                  "--c-grid", "0.1,1,10"],
    "pixels__8/digits/perturb-visual.json": [
        "perturb", "--model", "pixels:8", "--steps", "3", "--eps", "0,0.05", "--eps-rel",
        "--c-grid", "0.1,1,10", "--save-probe", "{out}/pixels__8/digits/perturb-visual.probe.npz"],
    "test__tiny-clip/digits/retrieval-visual.json": ["retrieval", "--model", "test:tiny-clip"],
    "test__tiny-clip/digits/linear_probe-visual.json": [
        "probe", "linear", "--model", "test:tiny-clip", "--c-grid", "0.1,1,10"],
    "test__tiny-clip/digits/knn-aligned.json": [
        "probe", "knn", "--model", "test:tiny-clip", "--features", "aligned", "--k", "5"],
}


def write_suite(path: Path, out: Path, cache: Path, text: str = SUITE) -> Path:
    path.write_text(text.format(out=out, cache=cache, grid=GRID))
    return path


#: provenance fields that differ between two extractions of the same features
VOLATILE = ("created_at", "library_versions")


def records(out: Path, cache: Path | None = None) -> dict[str, object]:
    """Every record under ``out`` (by relative path); with ``cache`` the out and cache folders'
    names and the cache files' creation times are masked (a fresh cache made them)."""
    found = {}
    for p in sorted(out.rglob("*.json")):
        if p.name == "expected.json" or "report" in p.relative_to(out).parts:
            continue
        text = p.read_text().replace(str(out), "<out>")
        record = json.loads(text.replace(str(cache), "<cache>") if cache else text)
        if cache:
            for key in VOLATILE:
                record["provenance"].pop(key, None)
        found[str(p.relative_to(out))] = record
    return found


@pytest.fixture(scope="module")
def reference(digits_cache, tmp_path_factory):
    """One uninterrupted run of the suite on the session's digits cache."""
    root = tmp_path_factory.mktemp("suite")
    out = root / "out"
    suite = write_suite(root / "suite.toml", out, digits_cache)
    result = run_suite(suite, progress=False)
    return suite, out, result


def test_a_suite_writes_the_records_the_commands_write(reference, digits_cache, tmp_path):
    _, out, result = reference
    assert result.ok and len(result.ran) == 8  # 2 extractions + 6 task cells
    assert result.model_loads == ["pixels:8", "test:tiny-clip"]  # each model loaded once
    by_hand = tmp_path / "by-hand"
    for rel, argv in COMMANDS.items():
        argv = [a.replace("{out}", str(by_hand)) for a in argv]
        code = main([*argv, "--dataset", "digits", "--cache-dir", str(digits_cache),
                     "--no-progress", "--json", str(by_hand / rel)])
        assert code == 0
    assert records(out) == records(by_hand)
    assert (out / "report" / "report.md").exists()


def test_a_rerun_does_no_work(reference):
    suite, out, _ = reference
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_suite(suite, progress=False)
    assert again.ran == [] and again.model_loads == [] and len(again.done_before) == 8
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_changed_settings_rerun_only_their_cells(reference, tmp_path):
    _, out, _ = reference
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    cache = load_suite(reference[0]).cache_dir
    suite = write_suite(tmp_path / "s.toml", copy, cache,
                        SUITE.replace("ks = [5]", "ks = [3]"))
    plan = build_plan(load_suite(suite))
    statuses = {c.name: plan.status(c) for c in plan.cells}
    assert statuses.pop("test__tiny-clip/digits/knn-aligned") == "changed"
    assert set(statuses.values()) == {"done"}
    result = run_suite(suite, progress=False, report=False)
    assert result.ran == ["test__tiny-clip/digits/knn-aligned"]


def test_a_killed_run_finishes_with_the_same_records(reference, tmp_path):
    """Killed (SIGKILL) while cells remain, rerun: the records equal an uninterrupted run's."""
    _, ref_out, _ = reference
    out, cache = tmp_path / "out", tmp_path / "cache"
    suite = write_suite(tmp_path / "s.toml", out, cache)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "featkit", "run", str(suite),
                             "--no-progress", "--no-report"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    first = out / "pixels__8" / "digits" / "extract.cell"
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(out.rglob("*.cell")))
    assert 1 <= finished < 8, "the kill should land while cells remain"
    result = run_suite(suite, progress=False)
    assert result.ok and len(result.ran) == 8 - finished
    assert records(out, cache) == records(ref_out, load_suite(reference[0]).cache_dir)


def test_a_failing_cell_does_not_stop_the_others(digits_cache, tmp_path, capsys):
    text = SUITE + """
[[datasets]]
name = "imagefolder"
root = "{out}/no-such-folder"

[[tasks]]
task = "perturb"
label = "bad-probe"
models = ["test:tiny-clip"]
datasets = ["digits"]
settings = {{ probe = "{out}/missing.npz", steps = 1 }}
"""
    out = tmp_path / "out"
    suite = write_suite(tmp_path / "s.toml", out, digits_cache, text)
    assert main(["run", str(suite), "--no-progress", "--no-report"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED  pixels__8/imagefolder/extract" in printed
    assert "FAILED  test__tiny-clip/digits/perturb-visual-bad-probe" in printed
    assert "blocked pixels__8/imagefolder/retrieval-visual" in printed
    assert (out / "test__tiny-clip" / "digits" / "knn-aligned.json").exists()
    state = json.loads((out / "pixels__8" / "imagefolder" / "extract.cell").read_text())
    assert state["status"] == "failed" and "no-such-folder" in state["error"]


def test_dry_run_prints_the_plan_and_writes_nothing(reference, tmp_path, capsys):
    suite, out, _ = reference
    assert main(["run", str(suite), "--dry-run", "--out", str(tmp_path / "fresh")]) == 0
    printed = capsys.readouterr().out
    assert "8 cells, 0 done, 8 to run" in printed and "knn-aligned" in printed
    assert not (tmp_path / "fresh").exists()
    assert main(["run", str(suite), "--dry-run"]) == 0
    assert "8 cells, 8 done, 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('task = "retrieval"', 'task = "retreival"'),
     "unknown task 'retreival' (did you mean retrieval"),
    (lambda s: s.replace("ks = [5]", "kz = [5]"), "knn: unknown setting 'kz'"),
    (lambda s: s.replace('id = "pixels:8"', 'id = "pixels:8"\nweight = "x"'),
     "models[0]: unknown key 'weight' (did you mean weights?)"),
    (lambda s: s.replace('models = ["test:tiny-clip"]\nfeatures = ["aligned"]',
                         'models = ["tiny"]\nfeatures = ["aligned"]'),
     "names model 'tiny'"),
    (lambda s: s + '\n[[tasks]]\ntask = "retrieval"\n', "give one of them a label"),
    (lambda s: s.replace('[extract]\nnum_workers = 0', 'extract = 3'),
     "'extract' must be a table"),
    (lambda s: s.replace('num_workers = 0', 'batchsize = 3'),
     "[extract]: unknown key 'batchsize' (did you mean batch_size"),
    (lambda s: s.replace("ks = [5]", "ks = [5], ci = 0.95"),
     "knn: setting 'ci' takes a table of Interval settings (level, resamples, seed), got 0.95"),
    (lambda s: s.replace("ks = [5]", "ks = [5], ci = { levle = 0.95 }"),
     "knn.ci: unknown setting 'levle' (did you mean level?)"),
])
def test_plans_are_checked_before_any_work(tmp_path, edit, message):
    suite = tmp_path / "s.toml"
    suite.write_text(edit(SUITE.format(out=tmp_path / "o", cache=tmp_path / "c", grid=GRID)))
    with pytest.raises(FeatkitError, match=re.escape(message)):
        build_plan(load_suite(suite))
    assert not (tmp_path / "o").exists()


def test_optional_tasks_and_missing_kinds_are_left_out_with_a_note(tmp_path):
    text = SUITE + '\n[[tasks]]\ntask = "no_such_task"\noptional = true\n' \
        '\n[[tasks]]\ntask = "retrieval"\nfeatures = ["aligned"]\n'
    suite = write_suite(tmp_path / "s.toml", tmp_path / "o", tmp_path / "c", text)
    plan = build_plan(load_suite(suite))
    assert any("task 'no_such_task' is not in this featkit" in n for n in plan.notes)
    assert "pixels:8 has no 'aligned' features: retrieval on them is left out" in plan.notes
    assert "test__tiny-clip/digits/retrieval-aligned" in [c.name for c in plan.cells]


def test_a_suite_asks_for_intervals_with_a_table(tmp_path):
    """``ci = {level = 0.9}`` in a task's settings builds the Interval the CLI's --ci builds."""
    from featkit.tasks.intervals import Interval

    text = SUITE.replace("ks = [5]", "ks = [5], ci = {{ level = 0.9, seed = 2 }}")
    plan = build_plan(load_suite(write_suite(tmp_path / "s.toml", tmp_path / "o", tmp_path / "c",
                                             text)))
    knn_cells = [c for c in plan.cells if c.task == "knn"]
    assert knn_cells
    from featkit.tasks import knn
    from featkit.tasks.settings import settings_from

    settings = settings_from(knn.Settings, knn_cells[0].values, task="knn")
    assert settings.ci == Interval(level=0.9, seed=2)
