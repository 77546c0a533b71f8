"""Suites: a whole benchmark matrix (models x datasets x tasks) in one resumable command.

:mod:`~featkit.suite.spec` reads and checks suite files, :mod:`~featkit.suite.plan` turns one
into cells with stable keys, :mod:`~featkit.suite.cells` runs one cell and
:mod:`~featkit.suite.runner` the whole suite (``featkit run SUITE``, :func:`run_suite`);
:mod:`~featkit.suite.shipped` finds the suites shipped with featkit by name.
"""

from __future__ import annotations

from featkit.suite.plan import Cell, Plan, build_plan
from featkit.suite.runner import SuiteResult, plan_table, run_suite
from featkit.suite.shipped import shipped_suites
from featkit.suite.spec import DatasetSpec, Expected, ModelSpec, Suite, TaskSpec, load_suite

__all__ = ["Cell", "DatasetSpec", "Expected", "ModelSpec", "Plan", "Suite", "SuiteResult",
           "TaskSpec", "build_plan", "load_suite", "plan_table", "run_suite", "shipped_suites"]
