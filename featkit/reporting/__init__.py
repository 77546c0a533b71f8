"""Turn a folder of result JSONs into the tables, statistics and figures papers need.

(The package is ``reporting``, not ``report``, so that ``featkit.report`` can be the function:
a submodule named ``report`` would replace a lazily exposed function of that name on import.)

Split along its jobs: :mod:`~featkit.reporting.collect` reads result files into records,
:mod:`~featkit.reporting.frames` derives the tidy tables (and the statistics read off them),
:mod:`~featkit.reporting.comparisons` sets FG-BMK's protocol next to the corrected one and
published values next to measured ones,
:mod:`~featkit.reporting.render` builds the :class:`Report` and writes CSV, Markdown and
figures. The statistics themselves live in :mod:`featkit.stats`, below both this package and
:mod:`featkit.plots`. Every public name is re-exported here, so ``from featkit.reporting import
report`` (and the rest) is the API.
"""

from __future__ import annotations

from featkit.reporting.collect import RECORD_KEYS, Entry, collect_results
from featkit.reporting.comparisons import collect_expected, expected_frame, protocol_frame
from featkit.reporting.encoders import encoder_figure, encoder_frame, encoder_section
from featkit.reporting.frames import (
    is_headline,
    label_records,
    merged_frame,
    metric_table,
    natural_key,
    natural_sorted,
    parse_shift,
    perturbed_frame,
    rank_test_for,
    results_frame,
    robustness_fit,
    select_metrics,
    shift_task_order,
    sweeps_frame,
    system_labels,
)
from featkit.reporting.render import (
    Report,
    figure_name,
    markdown_table,
    render_markdown,
    report,
)
from featkit.stats import (
    ALPHA,
    CLIP_EPS,
    MIN_DATASETS_FOR_RANKS,
    MIN_SYSTEMS_FOR_RANKS,
    TRANSFORMS,
    RankTest,
    RobustnessFit,
    critical_difference,
    effective_robustness,
    fit_robustness_line,
    friedman_nemenyi,
    inverse_transform,
    mean_ranks,
    nemenyi_q_alpha,
    nonsignificant_groups,
    transform_accuracy,
)

__all__ = [
    "ALPHA",
    "CLIP_EPS",
    "MIN_DATASETS_FOR_RANKS",
    "MIN_SYSTEMS_FOR_RANKS",
    "RECORD_KEYS",
    "TRANSFORMS",
    "Entry",
    "RankTest",
    "Report",
    "RobustnessFit",
    "collect_expected",
    "collect_results",
    "critical_difference",
    "effective_robustness",
    "encoder_figure",
    "encoder_frame",
    "encoder_section",
    "expected_frame",
    "figure_name",
    "fit_robustness_line",
    "friedman_nemenyi",
    "inverse_transform",
    "is_headline",
    "label_records",
    "markdown_table",
    "mean_ranks",
    "merged_frame",
    "metric_table",
    "natural_key",
    "natural_sorted",
    "nemenyi_q_alpha",
    "nonsignificant_groups",
    "parse_shift",
    "perturbed_frame",
    "protocol_frame",
    "rank_test_for",
    "render_markdown",
    "report",
    "results_frame",
    "robustness_fit",
    "select_metrics",
    "shift_task_order",
    "sweeps_frame",
    "system_labels",
    "transform_accuracy",
]
