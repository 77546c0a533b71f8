"""A suite's plan: its cells, each cell's key, where its files go, and which are already done.

A cell is one unit of work: extracting one model's features of one dataset, or one task on one
model's kind of one dataset (or of several, for a merged probe). Its **key** hashes everything
that decides its result: the task and its settings with every default filled in (the task's
``Settings`` dataclass), the model id with the identity of its weights and adapter (resolved
path, size and mtime of every file), its options, the feature kind, and each dataset's name,
reader and resolved root. The key is stored next to the record, in ``<record>.cell``, so the
records themselves stay exactly what the commands write; a cell whose ``.cell`` holds its key,
status ``done`` and whose files exist is skipped.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError, closest
from featkit.suite.spec import DatasetSpec, ModelSpec, Suite, TaskSpec

EXTRACT = "extract"
#: featkit.extract's defaults for the keywords a suite may set.
EXTRACT_DEFAULTS: dict[str, Any] = {"batch_size": 64, "device": "auto", "precision": "fp32",
                                    "num_workers": "auto", "shard_size": 1024,
                                    "skip_bad": False, "splits": ("train", "val", "test")}
#: Extraction keywords that change the features (and so the key of the cells reading them).
FEATURE_KEYWORDS = ("precision", "skip_bad")
#: Task modules the registry does not import itself yet (FG-BMK's protocol).
EXTRA_TASK_MODULES = ("featkit.tasks.fgbmk",)


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``features``: the kind a task reads, or the kinds an extraction
    writes; ``path``: the record (tasks) relative to the suite's out folder; ``state``: the
    ``.cell`` file next to it; ``depends``: the ``source_key`` of each extraction cell whose
    features it reads (what the features depend on: model, weights, options, data);
    ``settings``: every setting with its default, as the key hashes them; ``values``: the
    settings the suite gives, from which the task's ``Settings`` is built."""

    task: str
    model: ModelSpec
    datasets: tuple[DatasetSpec, ...]
    features: tuple[str, ...]
    settings: Mapping[str, Any]
    key: str
    path: Path
    state: Path
    depends: tuple[str, ...] = ()
    label: str = ""
    multi_dataset: bool = False
    source_key: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``model/dataset[+dataset]/file`` as progress lines show it."""
        return self.path.with_suffix("").as_posix() if self.task != EXTRACT else \
            self.state.parent.joinpath(EXTRACT).as_posix()

    @property
    def is_extract(self) -> bool:
        return self.task == EXTRACT


@dataclass
class Plan:
    """The cells in the order they run (extraction first, model by model), and notes on cells
    left out (a kind a model lacks, an optional task this featkit does not have)."""

    suite: Suite
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.suite.out

    def status(self, cell: Cell) -> str:
        """``done``, ``todo`` (never run), ``failed`` (last run failed) or ``changed`` (run
        with other settings, weights or data)."""
        state = read_state(self.out / cell.state)
        if state is None:
            return "todo"
        if state.get("key") != cell.key:
            return "changed"
        if state.get("status") != "done":
            return "failed"
        files = [self.out / cell.path] if not cell.is_extract else [
            Path(p) for p in state.get("files", [])]
        return "done" if all(f.exists() for f in files) else "todo"


def canonical(value: Any) -> Any:
    """A JSON-able, order-stable form of settings (dataclasses as dicts, tuples as lists)."""
    if is_dataclass(value) and not isinstance(value, type):
        return canonical(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(value: Any) -> str:
    """The key of a cell: sha256 of the canonical JSON, 16 hex digits."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def path_identity(path: str | None) -> Any:
    """What identifies local weights or an adapter without reading them: the resolved path,
    and size and mtime of the file or of every file under the folder."""
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        return {"path": str(p), "files": [(str(f.relative_to(p)), f.stat().st_size,
                                           f.stat().st_mtime_ns)
                                          for f in sorted(p.rglob("*")) if f.is_file()]}
    if p.is_file():
        return {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
    return {"path": str(p), "missing": True}


def read_state(path: Path) -> dict[str, Any] | None:
    """A ``.cell`` file's contents; None when absent or unreadable (a cell killed while writing
    it is simply not done)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def register_aliases(suite: Suite) -> None:
    """Register each dataset whose name differs from its reader as a reader of that name, so
    its cache files and records carry the suite's name (several manifest datasets stay apart)."""
    from featkit.datasets import list_datasets, open_dataset, register_dataset

    known = list_datasets()
    for d in suite.datasets:
        if d.name == d.reader:
            continue
        if d.reader not in known:
            raise FeatkitError(f"{suite.path}: dataset '{d.name}' reads with unknown reader "
                               f"'{d.reader}'{closest(d.reader, list(known))}")
        if d.name in known:
            if known[d.name].startswith(f"{d.reader} data under the name"):
                continue  # registered by an earlier plan of this process
            raise FeatkitError(f"{suite.path}: dataset name '{d.name}' is already a featkit "
                               f"dataset; name the {d.reader} data otherwise")
        reader = type(open_dataset(d.reader, d.root or "."))
        alias = type(f"{reader.__name__}_{d.name}", (reader,), {})
        register_dataset(d.name, f"{d.reader} data under the name {d.name}")(alias)


def _dataset_identity(d: DatasetSpec) -> dict[str, Any]:
    root = str(Path(d.root).expanduser().resolve()) if d.root else None
    return {"name": d.name, "reader": d.reader, "root": root}


def _model_identity(m: ModelSpec, options: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    return {"model": model_id, "weights": path_identity(m.weights),
            "adapter": path_identity(m.adapter), "options": dict(options)}


@dataclass(frozen=True)
class _TaskEntry:
    spec: TaskSpec
    settings: Mapping[str, Any]
    multi_dataset: bool


def _resolve_task(spec: TaskSpec, where: str, registered: Mapping[str, Any]
                  ) -> _TaskEntry | str:
    """The task's settings with defaults (its ``Settings``) and whether its ``run`` takes a
    list of datasets; a note (str) when an optional task is missing."""
    from featkit.tasks.settings import settings_from

    info = registered.get(spec.task)
    if info is None:
        if spec.optional:
            return f"{where}: task '{spec.task}' is not in this featkit; its cells are left out"
        raise FeatkitError(f"{where}: unknown task '{spec.task}'"
                           f"{closest(spec.task, [EXTRACT, *registered])} (tasks: "
                           f"{', '.join(registered)}); mark it optional = true to skip it")
    module = importlib.import_module(info.module)
    settings = settings_from(module.Settings, spec.settings, task=spec.task)
    first = list(inspect.signature(module.run).parameters)[1]
    return _TaskEntry(spec, canonical(settings), first == "datasets")


def build_plan(suite: Suite) -> Plan:
    """Every cell of ``suite`` with its key and files; settings and model options are checked
    here, before any work."""
    import extractors
    from featkit._imports import import_present
    from featkit.cache import slug
    from featkit.tasks.registry import tasks

    register_aliases(suite)
    import_present(EXTRA_TASK_MODULES)
    registered = tasks()
    notes: list[str] = []
    entries: list[_TaskEntry] = []
    for i, spec in enumerate(suite.tasks):
        if spec.task == EXTRACT:
            continue  # extraction cells are planned for every (model, dataset) a task reads
        entry = _resolve_task(spec, f"{suite.path}: tasks[{i}]", registered)
        if isinstance(entry, str):
            notes.append(entry)
        else:
            entries.append(entry)
    extract = {**EXTRACT_DEFAULTS, **suite.extract}
    feature_settings = {k: extract[k] for k in FEATURE_KEYWORDS}
    datasets = {d.name: d for d in suite.datasets}
    extract_cells: dict[tuple[str, str], dict[str, Any]] = {}
    task_cells: list[Cell] = []
    for model in suite.models:
        spec = extractors.get_spec(model.id)
        options = extractors.check_options(spec, model.options, adapter=model.adapter)
        identity = _model_identity(model, options, spec.name)
        for entry in entries:
            t = entry.spec
            if t.models is not None and model.name not in t.models and model.id not in t.models:
                continue
            chosen = [datasets[n] for n in (t.datasets or datasets)]
            groups = [tuple(chosen)] if entry.settings.get("merge") is True else [
                (d,) for d in chosen]
            for kind in t.features:
                if kind not in spec.kinds:
                    notes.append(f"{model.name} has no '{kind}' features: {t.task} on them is "
                                 f"left out")
                    continue
                for group in groups:
                    sources = [{**identity, **feature_settings, **_dataset_identity(d)}
                               for d in group]
                    for d in group:
                        pair = extract_cells.setdefault((model.name, d.name), {
                            "model": model, "dataset": d, "kinds": set(model.features),
                            "order": list(spec.kinds),
                            "source": {**identity, **feature_settings, **_dataset_identity(d)}})
                        pair["kinds"].add(kind)
                    folder = Path(slug(model.name)) / "+".join(slug(d.name) for d in group)
                    stem = f"{t.task}-{kind}" + (f"-{slug(t.label)}" if t.label else "")
                    key = digest({"task": t.task, "settings": entry.settings, "kind": kind,
                                  "sources": sources})
                    task_cells.append(Cell(
                        t.task, model, group, (kind,), entry.settings, key,
                        folder / f"{stem}.json", folder / f"{stem}.cell",
                        depends=tuple(digest(s) for s in sources), label=t.label,
                        multi_dataset=entry.multi_dataset, values=t.settings))
    cells = []
    for pair in extract_cells.values():
        order = pair["order"]  # the model's own order, as featkit extract writes them
        kinds = tuple(sorted(pair["kinds"], key=lambda k: (order.index(k) if k in order
                                                            else len(order), k)))
        folder = Path(slug(pair["model"].name)) / slug(pair["dataset"].name)
        cells.append(Cell(
            EXTRACT, pair["model"], (pair["dataset"],), kinds, dict(extract),
            digest({"source": pair["source"], "kinds": kinds, "splits": extract["splits"]}),
            folder, folder / f"{EXTRACT}.cell", source_key=digest(pair["source"])))
    _check_paths(suite, task_cells)
    return Plan(suite, cells + _ordered(task_cells, suite), list(dict.fromkeys(notes)))


def _ordered(cells: Sequence[Cell], suite: Suite) -> list[Cell]:
    """Task cells model by model (as listed), then as the suite lists tasks and datasets."""
    rank = {m.name: i for i, m in enumerate(suite.models)}
    return sorted(cells, key=lambda c: rank[c.model.name])


def _check_paths(suite: Suite, cells: Sequence[Cell]) -> None:
    seen: dict[Path, Cell] = {}
    for cell in cells:
        other = seen.get(cell.path)
        if other is not None:
            raise FeatkitError(f"{suite.path}: two {cell.task} entries write {cell.path}; give "
                               f"one of them a label = \"...\"")
        seen[cell.path] = cell
