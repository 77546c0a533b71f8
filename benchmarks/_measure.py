"""Process measurements the benchmark scripts share (Linux): CPU seconds and resident memory.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so a transient peak before the measured part
    (model loading) does not count; False where the kernel does not allow it (Linux < 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False
