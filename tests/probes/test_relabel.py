"""probes.labels.build_relabel: classes renamed to a coarser level with new names."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.labels import build_label_map, build_relabel


def test_relabel_to_new_names_in_first_appearance_order():
    names = ["laysan", "black_footed", "ani", "sooty"]
    mapping = {"laysan": "Phoebastria", "black_footed": "Phoebastria", "ani": "Crotophaga",
               "sooty": "Phoebetria"}
    relabel = build_relabel(names, mapping)
    assert relabel.class_names == ("Phoebastria", "Crotophaga", "Phoebetria")
    np.testing.assert_array_equal(relabel.apply(np.array([0, 1, 2, 3, 1])), [0, 0, 1, 2, 0])
    assert relabel.merged == {"Phoebastria": ("laysan", "black_footed")}
    with pytest.raises(FeatkitError, match="unknown class name"):
        build_label_map(names, mapping)  # a label map only merges into existing classes


def test_relabel_needs_every_class():
    with pytest.raises(FeatkitError, match="hierarchy: 1 of 2 classes have no new name \\(b\\)"):
        build_relabel(["a", "b"], {"a": "x"})
    with pytest.raises(FeatkitError, match="non-empty names"):
        build_relabel(["a"], {"a": ""})
