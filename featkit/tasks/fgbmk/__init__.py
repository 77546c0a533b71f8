"""FG-BMK's protocol (``--protocol fgbmk``): what its released code computes, for comparison.

Two tasks, each recording every way it departs from the standard protocol and naming the
corrected task it is compared with in ``featkit report``: :mod:`~featkit.tasks.fgbmk.linear`
(``fgbmk_linear``, next to ``linear_probe``) and :mod:`~featkit.tasks.fgbmk.retrieval`
(``fgbmk_retrieval``, next to ``retrieval``). The computations are :mod:`probes.fgbmk`'s.
"""

from __future__ import annotations

from featkit.tasks.fgbmk import linear, retrieval

__all__ = ["linear", "retrieval"]
