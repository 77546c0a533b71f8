"""``featkit run SUITE``: every cell of a suite, resumable, failures isolated, then the report.

Extraction cells run first, model by model, each model loaded once for all its datasets (under
torchrun every rank takes part in them, as in ``featkit extract``, and rank 0 alone runs the
task cells and the report). Cells already done with the same key are skipped; a cell that fails
is reported and the others go on (cells reading the features of a failed extraction are
reported as blocked); progress lines give the overall position and an ETA from the durations of
the cells run so far (and of earlier runs of the same tasks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featkit.suite.cells import (
    Models,
    failed_state,
    finished_state,
    run_extract,
    run_task,
    write_state,
)
from featkit.suite.plan import Cell, Plan, build_plan, read_state
from featkit.suite.spec import load_suite

REPORT_FOLDER = "report"
EXPECTED_FILE = "expected.json"


@dataclass
class SuiteResult:
    """What a run did: cell names that ran, were already done, failed (with the error) or were
    blocked by a failed extraction; each run cell's own seconds; the whole run's seconds, of
    which planning (reading the suite, checking settings, the cells' statuses) and the
    report."""

    plan: Plan
    ran: list[str] = field(default_factory=list)
    done_before: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    cell_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    report: Path | None = None
    model_loads: list[str] = field(default_factory=list)
    plan_seconds: float = 0.0
    report_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    @property
    def overhead_seconds(self) -> float:
        """The run's time outside its cells' own work (planning, skipping, records, report)."""
        return self.seconds - sum(self.cell_seconds.values())


class Progress:
    """Numbered progress lines with the elapsed time and an ETA: each remaining cell is
    expected to take the mean time of the cells of its task finished so far in this run, else
    in earlier runs (their ``.cell`` files), else of any cell."""

    def __init__(self, plan: Plan, todo: list[Cell], echo: Callable[[str], None]) -> None:
        self.todo, self.echo, self.started = todo, echo, time.perf_counter()
        self.done = 0
        self.times: dict[str, list[float]] = {}
        self.history: dict[str, list[float]] = {}
        for cell in plan.cells:
            state = read_state(plan.out / cell.state)
            if state and state.get("status") == "done" and state.get("seconds") is not None:
                self.history.setdefault(cell.task, []).append(float(state["seconds"]))

    def _estimate(self, task: str) -> float | None:
        for source in (self.times, self.history):
            if source.get(task):
                return sum(source[task]) / len(source[task])
        every = [t for ts in self.times.values() for t in ts]
        return sum(every) / len(every) if every else None

    def eta(self) -> str:
        estimates = [self._estimate(c.task) for c in self.todo[self.done:]]
        if not estimates:
            return "0 s"
        if any(e is None for e in estimates):
            return "?"
        return _duration(sum(estimates))

    def finished(self, cell: Cell, status: str, seconds: float, note: str = "", *,
                 inline: bool = False) -> None:
        """One line for a finished cell; ``note`` follows on the line (``inline``, e.g. the
        headline metrics) or on the next (an error)."""
        self.done += 1
        if status == "done":
            self.times.setdefault(cell.task, []).append(seconds)
        width = len(str(len(self.todo)))
        elapsed = _duration(time.perf_counter() - self.started)
        shown = f"  {note}" if note and inline else ""
        self.echo(f"[{self.done:>{width}}/{len(self.todo)}] {status:<7} {cell.name}  "
                  f"{seconds:.1f} s{shown}  (elapsed {elapsed}, ETA {self.eta()})"
                  + (f"\n    {note}" if note and not inline else ""))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(plan: Plan, statuses: dict[str, str]) -> str:
    """The plan as a table: each cell, its model, datasets, kind(s) and status."""
    from featkit.results import format_table

    rows = [{"cell": c.name, "task": c.task, "model": c.model.id,
             "datasets": "+".join(d.name for d in c.datasets),
             "features": ",".join(c.features), "status": statuses[c.key]} for c in plan.cells]
    return format_table(rows)


def _broadcast(value: Any, device: str) -> Any:
    """Rank 0's value on every rank under torchrun (the plan's statuses), else ``value``."""
    from featkit import distributed

    if not distributed.launched_by_torchrun():
        return value
    from featkit._device import resolve_device

    return distributed.broadcast(distributed.init(resolve_device(device)), value)


def run_suite(path: str | os.PathLike, *, out: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, dry_run: bool = False,
              progress: bool = True, report: bool = True,
              echo: Callable[[str], None] | None = None) -> SuiteResult:
    """Run a suite file (or shipped suite name): every cell not already done, then ``featkit
    report`` on its out folder. ``dry_run`` prints the plan and what is done, and runs
    nothing. ``out`` and ``cache_dir`` override the suite's."""
    started = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))
    say = (echo or (lambda text: print(text, flush=True))) if rank == 0 else (lambda text: None)
    suite = load_suite(path, out=out, cache_dir=cache_dir)
    plan = build_plan(suite)
    statuses = _broadcast({c.key: plan.status(c) for c in plan.cells} if rank == 0 else None,
                          str(suite.extract.get("device", "auto")))
    result = SuiteResult(plan, plan_seconds=time.perf_counter() - started)
    todo = [c for c in plan.cells if statuses[c.key] != "done"]
    result.done_before = [c.name for c in plan.cells if statuses[c.key] == "done"]
    say(f"suite {suite.name}: {len(plan.cells)} cells, {len(result.done_before)} done, "
        f"{len(todo)} to run -> {plan.out}")
    for note in plan.notes:
        say(f"note: {note}")
    if dry_run:
        say(plan_table(plan, statuses))
        result.seconds = time.perf_counter() - started
        return result
    plan.out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _write_expected(plan)
    bar = Progress(plan, todo, say)
    blocked_sources: dict[str, str] = {}
    models = Models()
    try:
        for cell in (c for c in todo if c.is_extract):
            error = _run_cell(cell, plan, result, bar, rank, lambda c: run_extract(
                c, models, cache_dir=suite.cache_dir, progress=progress))
            if error:
                blocked_sources[cell.source_key] = f"its extraction {cell.name} failed"
    finally:
        models.release()
        result.model_loads = list(models.loads)
    if rank != 0:
        result.seconds = time.perf_counter() - started
        return result
    for cell in (c for c in todo if not c.is_extract):
        why = next((blocked_sources[k] for k in cell.depends if k in blocked_sources), None)
        if why:
            result.blocked[cell.name] = why
            bar.finished(cell, "blocked", 0.0, why)
            continue
        _run_cell(cell, plan, result, bar, rank, lambda c: _task_work(
            c, plan.out, suite.cache_dir, progress))
    if report and suite.report:
        report_started = time.perf_counter()
        result.report = _report(plan, say)
        result.report_seconds = time.perf_counter() - report_started
    result.seconds = time.perf_counter() - started
    say(_summary(result))
    return result


def _task_work(cell: Cell, out: Path, cache_dir: str | None, progress: bool) -> dict[str, Any]:
    """Run a task cell; its ``.cell`` notes the record and its headline metrics."""
    from featkit.tasks.registry import get_task

    records = run_task(cell, out, cache_dir=cache_dir, progress=progress)
    headline = get_task(cell.task).headline or get_task(cell.task).columns
    metrics = records[0].get("metrics", {}) if len(records) == 1 else {}
    return {"record": cell.path.name, "records": len(records),
            "headline": {m: metrics[m] for m in headline
                         if isinstance(metrics.get(m), (int, float))}}


def _run_cell(cell: Cell, plan: Plan, result: SuiteResult, bar: Progress, rank: int,
              work: Callable[[Cell], dict[str, Any]]) -> str | None:
    """Run one cell with its failure isolated; returns the error text when it failed."""
    started = time.perf_counter()
    try:
        extra = work(cell)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a broken cell is reported; the others go on
        seconds = time.perf_counter() - started
        result.failed[cell.name] = f"{type(err).__name__}: {err}"
        if rank == 0:
            write_state(plan.out / cell.state, failed_state(cell, started, err))
        bar.finished(cell, "FAILED", seconds, result.failed[cell.name])
        return result.failed[cell.name]
    seconds = time.perf_counter() - started
    if rank == 0:
        write_state(plan.out / cell.state, finished_state(cell, started, extra))
    result.ran.append(cell.name)
    result.cell_seconds[cell.name] = seconds
    shown = ", ".join(f"{m} {100 * v:.2f}" for m, v in extra.get("headline", {}).items())
    bar.finished(cell, "done", seconds, shown, inline=True)
    return None


def _write_expected(plan: Plan) -> None:
    """The suite's published values next to its records, where ``featkit report`` finds them."""
    path = plan.out / EXPECTED_FILE
    if not plan.suite.expected:
        return
    import extractors
    from featkit.errors import FeatkitError

    items = []
    for e in plan.suite.expected:
        item = e.as_dict()
        try:  # records name models by their canonical id
            item["model"] = extractors.canonical_id(e.model)
        except FeatkitError:
            pass
        items.append(item)
    data = {"featkit_expected": items, "suite": plan.suite.name}
    text = json.dumps(data, indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _report_inputs(out: Path) -> list[list[Any]]:
    report = out / REPORT_FOLDER
    return [[str(p.relative_to(out)), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(out.rglob("*.json")) if report not in p.parents]


def _report(plan: Plan, say: Callable[[str], None]) -> Path | None:
    """``featkit report`` on the out folder, skipped when no record changed since the last."""
    from featkit.reporting import report

    folder = plan.out / REPORT_FOLDER
    stamp = folder / ".inputs.json"
    inputs = _report_inputs(plan.out)
    if (folder / "report.md").exists() and read_state(stamp) == {"inputs": inputs}:
        say(f"report up to date: {folder / 'report.md'}")
        return folder
    if not any(name.endswith(".json") and name != EXPECTED_FILE for name, *_ in inputs):
        say("report: no records yet")
        return None
    try:
        rep = report(plan.out, out=folder)
    except Exception as err:  # the records are written; a report failure must not hide them
        say(f"report FAILED: {type(err).__name__}: {err}")
        return None
    for fig in rep.figures.values():
        fig.clf()
    write_state(stamp, {"inputs": inputs})
    say(f"report: {folder / 'report.md'} ({len(rep.sources)} records)")
    return folder


def _summary(result: SuiteResult) -> str:
    lines = [f"suite {result.plan.suite.name}: {len(result.ran)} cell(s) run, "
             f"{len(result.done_before)} already done, {len(result.failed)} failed, "
             f"{len(result.blocked)} blocked in {_duration(result.seconds)} "
             f"(cells {sum(result.cell_seconds.values()):.1f} s, overhead "
             f"{result.overhead_seconds:.1f} s)"]
    lines += [f"  failed {name}: {error}" for name, error in result.failed.items()]
    lines += [f"  blocked {name}: {why}" for name, why in result.blocked.items()]
    if result.failed or result.blocked:
        lines.append("rerun the same command to retry them; finished cells are kept")
    return "\n".join(lines)
