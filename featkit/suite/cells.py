"""Running one cell: an extraction with the loaded model, or a registered task.

Extraction cells call :func:`featkit.extraction.extract` with a model :class:`Models` loads once
for all of that model's datasets. Task cells look the task up in the registry, build its
``Settings`` with :func:`~featkit.tasks.settings.settings_from` and call its module's ``run``
the way its command does: with the list of datasets when ``run`` takes ``datasets``, one
dataset when it takes ``dataset``, and a probe file next to the record when it takes
``save_probe`` (as ``featkit probe linear`` saves one next to ``--json``). A task's ``run``
returns a record, a list of records, or a dataclass with a ``records`` or ``record`` field.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import os
import time
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError
from featkit.suite.plan import Cell
from featkit.suite.spec import ModelSpec


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write a ``.cell`` file atomically (a kill leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dict(state), indent=2, default=str) + "\n")
    os.replace(tmp, path)


class Models:
    """The model of the extraction cells now running, loaded on first use and kept until the
    cells move on to another model (so each model is loaded once for all its datasets)."""

    def __init__(self) -> None:
        self.loads: list[str] = []
        self._name: str | None = None
        self._extractor = None

    def get(self, model: ModelSpec, settings: Mapping[str, Any]):
        """The loaded extractor of ``model`` (with ``settings``' device and precision)."""
        if self._name == model.name and self._extractor is not None:
            return self._extractor
        self.release()
        import extractors
        from featkit import distributed
        from featkit._device import resolve_device

        device = distributed.local_device(resolve_device(settings["device"]))
        precision = settings["precision"] if device != "cpu" else "fp32"
        self._extractor = extractors.load_extractor(
            model.id, weights=model.weights, adapter=model.adapter, device=device,
            precision=precision, options=model.options)
        self._name = model.name
        self.loads.append(model.name)
        return self._extractor

    def release(self) -> None:
        """Free the loaded model (and CUDA's cached blocks)."""
        if self._extractor is None:
            return
        self._extractor, self._name = None, None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_extract(cell: Cell, models: Models, *, cache_dir: str | None,
                progress: bool) -> dict[str, Any]:
    """One extraction cell; returns what its ``.cell`` file records (the cache files)."""
    from featkit.extraction import extract

    s, model, dataset = cell.settings, cell.model, cell.datasets[0]
    summaries = extract(
        model.id, dataset.name, data_root=dataset.root, splits=list(s["splits"]),
        features=list(cell.features), weights=model.weights, adapter=model.adapter,
        batch_size=s["batch_size"], device=s["device"], precision=s["precision"],
        num_workers=s["num_workers"], cache_dir=cache_dir, skip_bad=s["skip_bad"],
        shard_size=s["shard_size"], progress=progress, options=dict(model.options),
        extractor=models.get(model, s))
    return {"files": [str(Path(x.path).resolve()) for x in summaries],
            "splits": {x.split: {"n": x.n, "dims": x.dims, "cached": x.cached,
                                 "seconds": round(x.seconds, 3), "skipped": len(x.skipped)}
                       for x in summaries}}


def records_of(task: str, result: Any) -> list[dict[str, Any]]:
    """The records a task's ``run`` returned (see the module docstring for the shapes)."""
    if isinstance(result, Mapping):
        return [dict(result)]
    if isinstance(result, list):
        return [dict(r) for r in result]
    if is_dataclass(result) and not isinstance(result, type):
        names = {f.name for f in fields(result)}
        if "records" in names:
            return [dict(r) for r in result.records]
        if "record" in names:
            return [dict(result.record)]
    raise FeatkitError(f"task {task}: run() returned {type(result).__name__}, not records")


def run_task(cell: Cell, out: Path, *, cache_dir: str | None, progress: bool
             ) -> list[dict[str, Any]]:
    """One task cell: the task's records, written to the cell's record file."""
    from featkit.results import write_result
    from featkit.tasks.loading import FeatureSource
    from featkit.tasks.registry import get_task
    from featkit.tasks.settings import settings_from

    module = importlib.import_module(get_task(cell.task).module)
    settings = settings_from(module.Settings, cell.values, task=cell.task)
    model = cell.model
    source = FeatureSource(model=model.id, features=cell.features[0], weights=model.weights,
                           adapter=model.adapter, cache_dir=cache_dir)
    names = [d.name for d in cell.datasets]
    record_path = out / cell.path
    kwargs: dict[str, Any] = {"progress": progress}
    if "save_probe" in inspect.signature(module.run).parameters:
        kwargs["save_probe"] = record_path.with_name(record_path.stem + ".probe.npz")
    result = module.run(source, names if cell.multi_dataset else names[0], settings, **kwargs)
    records = records_of(cell.task, result)
    write_result(records[0] if len(records) == 1 else records, record_path)
    return records


def finished_state(cell: Cell, started: float, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The ``.cell`` contents of a cell that finished."""
    return {"key": cell.key, "status": "done", "task": cell.task, "model": cell.model.id,
            "datasets": [d.name for d in cell.datasets], "features": list(cell.features),
            "seconds": round(time.perf_counter() - started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def failed_state(cell: Cell, started: float, error: BaseException) -> dict[str, Any]:
    """The ``.cell`` contents of a cell that failed (retried on the next run)."""
    state = finished_state(cell, started, {})
    state.update(status="failed", error=f"{type(error).__name__}: {error}")
    return state
