"""Entry point for the distributed-extraction tests: ``featkit`` with test-only fault injection.

Environment: ``FEATKIT_TEST_PIDS`` (folder: each rank writes its pid there),
``FEATKIT_TEST_SLOW`` (seconds to sleep per batch), ``FEATKIT_TEST_FAIL_RANK`` (this rank raises
after its first batch).
"""

import os
import sys
import time
from pathlib import Path

import extractors
from featkit.cli import main

rank = os.environ.get("RANK", "0")
if os.environ.get("FEATKIT_TEST_PIDS"):
    Path(os.environ["FEATKIT_TEST_PIDS"], f"rank{rank}.pid").write_text(str(os.getpid()))

_load = extractors.load_extractor


def _patched_load(*args, **kwargs):
    extractor = _load(*args, **kwargs)
    forward = extractor.forward
    delay = float(os.environ.get("FEATKIT_TEST_SLOW", "0"))
    fail = os.environ.get("FEATKIT_TEST_FAIL_RANK") == rank

    def patched(images, kinds):
        if fail:
            raise RuntimeError(f"injected failure on rank {rank}")
        time.sleep(delay)
        return forward(images, kinds)

    extractor.forward = patched
    return extractor


extractors.load_extractor = _patched_load
sys.exit(main(sys.argv[1:]))
