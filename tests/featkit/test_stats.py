"""featkit.stats: Friedman/Nemenyi statistics and the CD against the formula and Demšar's table;
the robustness line against scipy; and the rule that the statistics sit below the report and
its figures (stats imports neither, plots does not import the report)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2, linregress, norm

from featkit import stats as S
from featkit.errors import FeatkitError

# Ranks (1 = best) of five systems A..E on twelve datasets, built so the rank sums are
# 14, 25, 36, 47, 58: neighbours differ by 11/12 = 0.917 < CD = 1.7608 and systems two apart by
# 22/12 = 1.833 > CD, so exactly {A,B}, {B,C}, {C,D}, {D,E} are not significantly different.
RANKS = np.array([
    [2, 1, 3, 4, 5], [1, 2, 4, 3, 5], [1, 3, 2, 4, 5], [1, 3, 2, 4, 5], [1, 2, 3, 5, 4],
    [1, 2, 3, 4, 5], [2, 1, 3, 5, 4], [1, 2, 3, 4, 5], [1, 2, 4, 3, 5], [1, 3, 2, 4, 5],
    [1, 2, 4, 3, 5], [1, 2, 3, 4, 5],
])
SYSTEMS = ["A", "B", "C", "D", "E"]


def ranked_values() -> pd.DataFrame:
    """Datasets x systems accuracies whose per-dataset ranks are :data:`RANKS`."""
    return pd.DataFrame(1.0 - RANKS / 10.0, columns=SYSTEMS,
                        index=[f"d{i}" for i in range(len(RANKS))])


# --------------------------------------------------------------------------- rank tests


def test_critical_difference_formula_and_demsar_table():
    assert S.critical_difference(5, 12, 0.05) == pytest.approx(1.7608, abs=5e-5)
    q = 2.7277743708703763  # studentized_range.ppf(0.95, 5, inf) / sqrt(2)
    assert S.critical_difference(5, 12) == pytest.approx(q * math.sqrt(5 * 6 / (6 * 12)))
    # Demšar (2006) Table 5(a): Nemenyi q_0.05 for k = 2..10.
    table = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    for k, expected in zip(range(2, 11), table):
        assert S.nemenyi_q_alpha(k, 0.05) == pytest.approx(expected, abs=1e-3)
    assert S.nemenyi_q_alpha(5, 0.10) == pytest.approx(2.459, abs=1e-3)  # Table 5(b)


def test_friedman_statistic_equals_the_textbook_formula():
    values = ranked_values()
    test = S.friedman_nemenyi(values)
    n, k = values.shape
    rank_means = RANKS.mean(axis=0)
    statistic = 12 * n / (k * (k + 1)) * (np.sum(rank_means ** 2) - k * (k + 1) ** 2 / 4)
    assert test.statistic == pytest.approx(statistic)
    assert test.pvalue == pytest.approx(chi2.sf(statistic, k - 1))
    assert test.mean_ranks.to_dict() == pytest.approx(dict(zip(SYSTEMS, rank_means)))
    assert S.mean_ranks(values).to_dict() == test.mean_ranks.to_dict()
    assert test.k == 5 and test.n == 12
    assert test.cd == pytest.approx(1.7608, abs=5e-5)


def test_nemenyi_pvalues_agree_with_the_cd_and_the_groups():
    test = S.friedman_nemenyi(ranked_values())
    for a in SYSTEMS:
        for b in SYSTEMS:
            if a == b:
                continue
            diff = abs(test.mean_ranks[a] - test.mean_ranks[b])
            assert (test.pvalues.loc[a, b] < 0.05) == (diff > test.cd)
    assert test.groups == (("A", "B"), ("B", "C"), ("C", "D"), ("D", "E"))
    assert tuple(S.nonsignificant_groups(test.pvalues, test.alpha)) == test.groups


def test_rank_test_refuses_gaps_and_small_tables_and_ties_give_p_one():
    ties = pd.DataFrame(np.ones((4, 3)), columns=["a", "b", "c"])
    assert S.friedman_nemenyi(ties).pvalue == 1.0
    gap = ties.copy()
    gap.iloc[0, 1] = np.nan
    with pytest.raises(FeatkitError, match="complete table"):
        S.friedman_nemenyi(gap)
    with pytest.raises(FeatkitError, match=">= 3 systems"):
        S.friedman_nemenyi(ties[["a", "b"]])


# --------------------------------------------------------------------------- robustness fits


def test_robustness_fit_matches_scipy_linregress_on_noisy_points():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.2, 0.9, 8)
    shifted = np.clip(ref - 0.2 + rng.normal(0, 0.03, 8), 0.01, 0.99)
    reg = linregress(norm.ppf(ref), norm.ppf(shifted))
    assert S.fit_robustness_line(ref, shifted) == pytest.approx((reg.slope, reg.intercept))
    er = S.effective_robustness(ref, shifted, reg.slope, reg.intercept)
    expected = 100 * (shifted - norm.cdf(reg.slope * norm.ppf(ref) + reg.intercept))
    assert er == pytest.approx(expected)
    # accuracies of 0 and 1 are clipped, not infinite
    assert np.isfinite(S.transform_accuracy([0.0, 1.0])).all()


@pytest.mark.parametrize("transform", S.TRANSFORMS)
def test_transforms_invert_and_unknown_ones_are_refused(transform):
    acc = np.array([0.05, 0.5, 0.93])
    back = S.inverse_transform(S.transform_accuracy(acc, transform), transform)
    assert back == pytest.approx(acc)
    with pytest.raises(FeatkitError, match="probit, logit"):
        S.transform_accuracy(acc, "probitt")


# --------------------------------------------------------------------------- layering


def imported_modules(module: str) -> set[str]:
    """Every module a featkit module imports (at any level, TYPE_CHECKING blocks included)."""
    path = Path(S.__file__).parent.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reaches(names: set[str], target: str) -> bool:
    return any(n == target or n.startswith(target + ".") for n in names)


def test_statistics_sit_below_the_report_and_the_figures():
    stats_imports = imported_modules("featkit.stats")
    assert not reaches(stats_imports, "featkit.plots")
    assert not reaches(stats_imports, "featkit.reporting")
    plots_imports = imported_modules("featkit.plots")
    assert not reaches(plots_imports, "featkit.reporting")
    assert reaches(plots_imports, "featkit.stats")
