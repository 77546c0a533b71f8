"""``--ci LEVEL`` (with ``--ci-resamples`` and ``--ci-seed``), spelled the same by every command
whose task gives bootstrap intervals (:mod:`featkit.tasks.intervals`)."""

from __future__ import annotations

import argparse

from featkit.commands.common import non_negative_int, positive_int, unit_interval


def add_ci(parser: argparse.ArgumentParser, *, unit: str = "test items",
           default: float | None = None) -> None:
    """The interval options; ``unit`` names what is resampled (for the help text), ``default``
    the level when ``--ci`` is not given (None: no interval)."""
    from featkit.tasks.intervals import Interval

    resamples = Interval.resamples
    parser.add_argument("--ci", type=unit_interval, default=default, metavar="LEVEL",
                        help=f"percentile bootstrap intervals at this level, e.g. 0.95, "
                        f"resampling the per-item scores over {unit} (default: "
                        f"{'none' if default is None else default})")
    parser.add_argument("--ci-resamples", type=positive_int, default=resamples,
                        help=f"bootstrap resamples of --ci (default: {resamples})")
    parser.add_argument("--ci-seed", type=non_negative_int, default=0,
                        help="seed of the bootstrap resampling, recorded (default: 0)")


def interval_from(args: argparse.Namespace):
    """The :class:`~featkit.tasks.intervals.Interval` the options ask for, or None."""
    from featkit.tasks.intervals import Interval

    if args.ci is None:
        return None
    return Interval(level=args.ci, resamples=args.ci_resamples, seed=args.ci_seed)
