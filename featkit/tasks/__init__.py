"""The experiment layer: one module per experiment, between the cache and the probes.

A task loads what its experiment needs from the cache (:mod:`featkit.tasks.loading`, which
checks classes and label spaces once for every task), calls the pure functions of ``probes/``
and returns result records (:func:`featkit.results.make_result`). Its settings are one frozen
dataclass (``featkit.tasks.<name>.Settings``) whose defaults are the task's defaults. The CLI
commands, :mod:`featkit.analysis` and the notebook all call the same tasks, so a record is the
same whichever way it was made.

Adding an experiment: a pure function in ``probes/``, a task module here that registers a
:class:`~featkit.tasks.registry.TaskInfo` (and is listed in the registry's modules), and a thin
command in ``featkit/commands/``.
"""

from __future__ import annotations

from featkit.tasks.loading import FeatureSource
from featkit.tasks.registry import TaskInfo, get_task, register, tasks

__all__ = ["FeatureSource", "TaskInfo", "get_task", "register", "tasks"]
