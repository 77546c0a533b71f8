"""FG-BMK's protocol (``--protocol fgbmk``): what its released code computes, for comparison.

Two tasks, each recording every way it departs from the standard protocol and naming the
corrected task it is compared with in ``featkit report``: :mod:`~featkit.tasks.fgbmk.linear`
(``fgbmk_linear``, next to ``linear_probe``) and :mod:`~featkit.tasks.fgbmk.retrieval`
(``fgbmk_retrieval``, next to ``retrieval``). The computations are :mod:`probes.fgbmk`'s.
:mod:`~featkit.tasks.fgbmk.multilabel` (``multilabel_probe``) is the corrected protocol of
FG-BMK's multi-label datasets (SkinCon, Wine): :mod:`probes.multilabel`'s probe over their
label sets, scored by macro-AUROC and mAP over classes.
"""

from __future__ import annotations

from featkit.tasks.fgbmk import linear, multilabel, retrieval

__all__ = ["linear", "multilabel", "retrieval"]
