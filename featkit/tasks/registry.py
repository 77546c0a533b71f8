"""The task registry: what each experiment is called, what it reports and where it runs.

Every experiment registers one :class:`TaskInfo` here (in its ``featkit.tasks.<name>`` module).
``featkit report`` reads the headline metrics and table columns from this registry instead of
string literals, and a record's ``task`` field is a registered name.
"""

from __future__ import annotations

from dataclasses import dataclass

from featkit._imports import import_present
from featkit.errors import UnknownNameError, closest


@dataclass(frozen=True)
class TaskInfo:
    """One experiment.

    ``name``: the record's ``task`` field; ``title``: how tables name it; ``headline``: the
    metrics that bars and rank statistics show (empty: the task draws its own figures, as the
    PGD sweep does); ``columns``: the scalar metrics of its readable table, in order;
    ``shift_priority``: preference order as the accuracy of an effective-robustness fit (lower
    first; None: not an accuracy to fit); ``module``: where its ``run`` function lives.
    """

    name: str
    title: str
    headline: tuple[str, ...]
    columns: tuple[str, ...]
    module: str
    shift_priority: int | None = None


_TASKS: dict[str, TaskInfo] = {}

#: The task modules; each calls :func:`register` when imported.
_MODULES = (
    "featkit.tasks.retrieval",
    "featkit.tasks.linear",
    "featkit.tasks.knn",
    "featkit.tasks.perturb",
    "featkit.tasks.dg",
    "featkit.tasks.attributes",
    "featkit.tasks.taxonomy",
    "featkit.tasks.pairs",
    "featkit.tasks.shift",
    "featkit.tasks.zeroshot",
    "featkit.tasks.mc",
    "featkit.tasks.layers",
    "featkit.tasks.fgbmk",  # fgbmk_linear, fgbmk_retrieval, multilabel_probe
)


def register(info: TaskInfo) -> TaskInfo:
    """Add a task; a second task of the same name is a programming error."""
    if info.name in _TASKS and _TASKS[info.name] != info:
        raise ValueError(f"task {info.name!r} is registered twice")
    _TASKS[info.name] = info
    return info


def tasks() -> dict[str, TaskInfo]:
    """Every registered task, by record name."""
    import_present(_MODULES)
    return dict(_TASKS)


def get_task(name: str) -> TaskInfo:
    """The task of that record name; unknown names are a one-line error."""
    known = tasks()
    if name not in known:
        raise UnknownNameError(f"unknown task '{name}'{closest(name, list(known))} "
                               f"(tasks: {', '.join(known)})")
    return known[name]
