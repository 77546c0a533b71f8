"""Suite files: a TOML description of a benchmark matrix, read and checked before any work.

A suite names models, datasets and tasks, their settings and an output folder::

    name = "tiny"
    out = "results/tiny"           # default results/<name>; relative paths: to the cwd
    cache_dir = "cache"            # default featkit's ($FEATKIT_CACHE, else ./cache)

    [extract]                      # featkit.extract keywords for every extraction cell
    num_workers = 0

    [[models]]
    id = "test:tiny-clip"          # id or alias; also: name, weights, adapter, options,
    features = ["visual"]          # and the kinds to extract besides the tasks' own

    [[datasets]]
    name = "digits"                # also: root, and reader (the reader it aliases, so that
                                   # several manifest datasets keep their own names)
    [[tasks]]
    task = "linear_probe"          # a registered task (featkit.tasks.registry)
    features = ["visual"]          # default ["visual"]; also: models, datasets (subsets),
    settings = { c_grid = [0.1, 1] }   # label, optional (skip if this featkit lacks it)

    [[expected]]                   # published values shown next to the measured ones
    task = "linear_probe"; model = "test:tiny-clip"; dataset = "digits"; metric = "top1"
    percent = 12.5; source = "..."

Unknown keys are one-line errors (with the closest known key), at load time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError, closest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: featkit.extract keywords a suite's [extract] table may set.
EXTRACT_KEYS = ("batch_size", "device", "precision", "num_workers", "shard_size", "skip_bad",
                "splits")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a suite; ``name`` names its results folder (default: the id)."""

    id: str
    name: str
    weights: str | None = None
    adapter: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: ``name`` as the cache and records name it, read by ``reader`` at ``root``."""

    name: str
    reader: str
    root: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task entry: a registered task, its settings, the feature kinds and the subsets of
    models and datasets it runs on (None: all)."""

    task: str
    settings: Mapping[str, Any]
    features: tuple[str, ...] = ("visual",)
    models: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    label: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Expected:
    """A published value (in percent) of one (task, model, dataset, metric[, features])."""

    task: str
    model: str
    dataset: str
    metric: str
    percent: float
    source: str = ""
    features: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "dataset": self.dataset,
                "metric": self.metric, "value": self.percent / 100.0, "source": self.source,
                "features": self.features}


@dataclass(frozen=True)
class Suite:
    """A parsed suite file."""

    name: str
    path: Path
    out: Path
    cache_dir: str | None
    models: tuple[ModelSpec, ...]
    datasets: tuple[DatasetSpec, ...]
    tasks: tuple[TaskSpec, ...]
    extract: Mapping[str, Any]
    expected: tuple[Expected, ...] = ()
    description: str = ""
    report: bool = True


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise FeatkitError(f"{where}: unknown key '{key}'{closest(key, list(known))} "
                               f"(keys: {', '.join(known)})")


def _require(table: Mapping[str, Any], key: str, where: str, kind: type = str) -> Any:
    if key not in table:
        raise FeatkitError(f"{where}: '{key}' is missing")
    value = table[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise FeatkitError(f"{where}: '{key}' must be a non-empty {kind.__name__}, "
                           f"got {value!r}")
    return value


def _names(value: Any, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise FeatkitError(f"{where}: '{key}' must name one or more strings, got {value!r}")
    return tuple(value)


def tupled(value: Any) -> Any:
    """TOML arrays as tuples (settings dataclasses declare tuples), tables as dicts."""
    if isinstance(value, list):
        return tuple(tupled(v) for v in value)
    if isinstance(value, Mapping):
        return {k: tupled(v) for k, v in value.items()}
    return value


def _table_list(data: Mapping[str, Any], key: str, path: Path) -> list[Mapping[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise FeatkitError(f"{path}: '{key}' must be a list of tables ([[{key}]])")
    return items


def parse_suite(data: Mapping[str, Any], path: Path, *, out: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> Suite:
    """Check a suite's TOML data and build the :class:`Suite` (``out``/``cache_dir`` override
    the file's)."""
    _check_keys(data, ("name", "description", "out", "cache_dir", "report", "extract", "models",
                       "datasets", "tasks", "expected"), str(path))
    name = _require(data, "name", str(path))
    models = []
    for i, table in enumerate(_table_list(data, "models", path)):
        where = f"{path}: models[{i}]"
        _check_keys(table, ("id", "name", "weights", "adapter", "options", "features"), where)
        model_id = _require(table, "id", where)
        models.append(ModelSpec(
            id=model_id, name=str(table.get("name", model_id)), weights=table.get("weights"),
            adapter=table.get("adapter"), options=dict(table.get("options", {})),
            features=_names(table["features"], where, "features") if "features" in table else (),
        ))
    datasets = []
    for i, table in enumerate(_table_list(data, "datasets", path)):
        where = f"{path}: datasets[{i}]"
        _check_keys(table, ("name", "reader", "root"), where)
        dataset = _require(table, "name", where)
        root = table.get("root")
        datasets.append(DatasetSpec(dataset, str(table.get("reader", dataset)),
                                    None if root is None else str(root)))
    tasks = []
    for i, table in enumerate(_table_list(data, "tasks", path)):
        where = f"{path}: tasks[{i}]"
        _check_keys(table, ("task", "settings", "features", "models", "datasets", "label",
                            "optional"), where)
        settings = table.get("settings", {})
        if not isinstance(settings, Mapping):
            raise FeatkitError(f"{where}: 'settings' must be a table")
        tasks.append(TaskSpec(
            task=_require(table, "task", where), settings=tupled(settings),
            features=_names(table.get("features", "visual"), where, "features"),
            models=_names(table["models"], where, "models") if "models" in table else None,
            datasets=(_names(table["datasets"], where, "datasets") if "datasets" in table
                      else None),
            label=str(table.get("label", "")), optional=bool(table.get("optional", False)),
        ))
    expected = []
    for i, table in enumerate(_table_list(data, "expected", path)):
        where = f"{path}: expected[{i}]"
        _check_keys(table, ("task", "model", "dataset", "metric", "percent", "source",
                            "features"), where)
        value = table.get("percent")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise FeatkitError(f"{where}: 'percent' must be a number (the published value in "
                               f"percent), got {value!r}")
        expected.append(Expected(*(_require(table, k, where) for k in (
            "task", "model", "dataset", "metric")), float(value), str(table.get("source", "")),
            table.get("features")))
    extract = data.get("extract", {})
    if not isinstance(extract, Mapping):
        raise FeatkitError(f"{path}: 'extract' must be a table ([extract])")
    _check_keys(extract, EXTRACT_KEYS, f"{path}: [extract]")
    suite = Suite(
        name=name, path=path,
        out=Path(out or data.get("out") or Path("results") / name),
        cache_dir=str(cache_dir or data.get("cache_dir") or "") or None,
        models=tuple(models), datasets=tuple(datasets), tasks=tuple(tasks),
        extract=tupled(extract), expected=tuple(expected),
        description=str(data.get("description", "")), report=bool(data.get("report", True)),
    )
    _check_references(suite)
    return suite


def _check_references(suite: Suite) -> None:
    """Names are unique and every subset names a listed model or dataset."""
    where = str(suite.path)
    if not suite.models or not suite.datasets or not suite.tasks:
        raise FeatkitError(f"{where}: a suite needs [[models]], [[datasets]] and [[tasks]]")
    for kind, names in (("model", [m.name for m in suite.models]),
                        ("dataset", [d.name for d in suite.datasets])):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise FeatkitError(f"{where}: {kind} name(s) listed twice: {', '.join(twice)}")
    model_names = {m.name for m in suite.models} | {m.id for m in suite.models}
    dataset_names = {d.name for d in suite.datasets}
    for i, task in enumerate(suite.tasks):
        for name in task.models or ():
            if name not in model_names:
                raise FeatkitError(f"{where}: tasks[{i}] names model '{name}'"
                                   f"{closest(name, sorted(model_names))}, not in [[models]]")
        for name in task.datasets or ():
            if name not in dataset_names:
                raise FeatkitError(f"{where}: tasks[{i}] names dataset '{name}'"
                                   f"{closest(name, sorted(dataset_names))}, not in [[datasets]]")


def load_suite(path: str | os.PathLike, *, out: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> Suite:
    """Read and check a suite file: a path, or the name of a suite shipped with featkit."""
    from featkit.suite.shipped import resolve_suite

    file = resolve_suite(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise FeatkitError(f"{file}: not valid TOML ({err})") from None
    return parse_suite(data, file, out=out, cache_dir=cache_dir)
