"""Suite overhead on the tiny suite, against its cells' own times and the same commands one by one.

Each round, in this process (imports warmed first, as a long suite amortises them), with fresh
caches and output folders:

- baseline: the commands the tiny suite stands for, typed one by one (``featkit extract``
  twice, ``retrieval`` twice, ``probe linear`` twice, ``probe knn``, ``perturb``, the FG-BMK
  ``probe linear`` and ``retrieval``, then ``report``), each timed;
- suite: ``featkit.run_suite("tiny")`` on its own fresh cache, timed whole; the cells' own
  seconds come from the run, and the overhead is everything else (planning, skipping, records,
  the report), reported with the report apart.

Rounds alternate the order. Then a fully cached rerun: ``featkit run tiny`` in a fresh process
(interpreter start-up and imports included) and in this one.

    python benchmarks/bench_suite.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _measure

REPO = Path(__file__).resolve().parents[1]
MODELS = ("pixels:8", "test:tiny-clip")


def commands(out: Path, cache: Path) -> list[list[str]]:
    """The tiny suite as the commands a user would type (same settings, same record paths)."""
    common = ["--dataset", "digits", "--cache-dir", str(cache), "--no-progress"]
    cmds = [["extract", "--model", m, "--dataset", "digits", "--cache-dir", str(cache),
             "--num-workers", "0", "--no-progress", "--features", kinds]
            for m, kinds in zip(MODELS, ("visual", "visual,aligned,cls@-1,cls@-2,patch_mean@-1"))]
    for m in MODELS:
        folder = out / m.replace(":", "__") / "digits"
        cmds.append(["retrieval", "--model", m, *common, "--json",
                     str(folder / "retrieval-visual.json")])
        cmds.append(["probe", "linear", "--model", m, *common, "--json",
                     str(folder / "linear_probe-visual.json")])
    folder = out / "test__tiny-clip" / "digits"
    cmds.append(["probe", "knn", "--model", "test:tiny-clip", "--features", "aligned", *common,
                 "--json", str(folder / "knn-aligned.json")])
    cmds.append(["perturb", "--model", "test:tiny-clip", "--steps", "10", *common,
                 "--save-probe", str(folder / "perturb-visual.probe.npz"),
                 "--json", str(folder / "perturb-visual.json")])
    fgbmk = ["--features", "cls@-1", "--protocol", "fgbmk", "--fgbmk", "earlier_blocks=cls@-2,",
             "--fgbmk", "patch_kind=patch_mean@-1", "--fgbmk", "iterations=100"]
    cmds.append(["probe", "linear", "--model", "test:tiny-clip", *fgbmk, *common, "--json",
                 str(folder / "fgbmk_linear-cls@-1.json")])
    cmds.append(["retrieval", "--model", "test:tiny-clip", *fgbmk, *common, "--json",
                 str(folder / "fgbmk_retrieval-cls@-1.json")])
    cmds.append(["report", str(out), "--out", str(out / "report")])
    return cmds


def run_commands(root: Path) -> tuple[float, float]:
    """(total seconds of the commands, of which the report)."""
    import contextlib
    import io

    from featkit.cli import main

    total = report = 0.0
    for argv in commands(root / "out", root / "cache"):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(argv)
        seconds = time.perf_counter() - started
        if code:
            sys.exit(f"featkit {' '.join(argv)} failed ({code})")
        total += seconds
        report += seconds if argv[0] == "report" else 0.0
    return total, report


def run_suite(root: Path):
    import featkit

    result = featkit.run_suite("tiny", out=root / "out", cache_dir=root / "cache",
                               progress=False, echo=lambda text: None)
    if not result.ok:
        sys.exit(f"suite failed: {result.failed} {result.blocked}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from featkit.suite import build_plan, load_suite

    build_plan(load_suite("tiny"))  # imports: the registry, the readers, the model families
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.rounds):
            order = ("commands", "suite") if r % 2 == 0 else ("suite", "commands")
            row = {}
            for what in order:
                root = tmp / f"{what}-{r}"
                cpu = _measure.cpu_seconds()
                if what == "commands":
                    row["commands"], row["commands_report"] = run_commands(root)
                else:
                    result = run_suite(root)
                    row.update(suite=result.seconds, cells=sum(result.cell_seconds.values()),
                               plan=result.plan_seconds, report=result.report_seconds,
                               suite_root=root)
                row[f"{what}_cpu"] = _measure.cpu_seconds() - cpu
            row["overhead"] = row["suite"] - row["cells"]
            rows.append(row)
            print(f"round {r + 1}: commands {row['commands']:.2f} s (report "
                  f"{row['commands_report']:.2f} s, CPU {row['commands_cpu']:.1f} s); suite "
                  f"{row['suite']:.2f} s = cells {row['cells']:.2f} s + overhead "
                  f"{row['overhead']:.2f} s (planning {row['plan']:.2f} s, report "
                  f"{row['report']:.2f} s; CPU {row['suite_cpu']:.1f} s)", flush=True)
        last = rows[-1]["suite_root"]
        started = time.perf_counter()
        again = run_suite(last)
        warm_rerun = time.perf_counter() - started
        assert again.ran == [], again.ran
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "featkit", "run", "tiny", "--out",
                        str(last / "out"), "--cache-dir", str(last / "cache")], check=True,
                       capture_output=True, cwd=REPO)
        cold_rerun = time.perf_counter() - started

    med = {k: statistics.median(row[k] for row in rows)
           for k in ("commands", "suite", "cells", "overhead", "plan", "report", "commands_cpu",
                     "suite_cpu")}
    rest = med["overhead"] - med["report"]
    print(f"\nmedians over {len(rows)} round(s):")
    print(f"suite overhead / its cells' own time: {med['overhead'] / med['cells']:.1%} "
          f"({med['overhead']:.2f} s of {med['cells']:.2f} s; target <= 5 %)")
    print(f"  without the report: {rest / med['cells']:.1%} ({rest:.2f} s); the report "
          f"{med['report']:.2f} s ({med['report'] / med['cells']:.1%})")
    print(f"suite / the same commands one by one in this process: "
          f"{med['suite'] / med['commands']:.2f}x wall ({med['suite']:.2f} s vs "
          f"{med['commands']:.2f} s), {med['suite_cpu'] / med['commands_cpu']:.2f}x CPU "
          f"({med['suite_cpu']:.1f} s vs {med['commands_cpu']:.1f} s; CPU time is what other "
          f"processes on a shared machine do not inflate)")
    print(f"fully cached rerun: {cold_rerun:.2f} s in a fresh process (target < 10 s), "
          f"{warm_rerun:.3f} s in this one")


if __name__ == "__main__":
    main()
