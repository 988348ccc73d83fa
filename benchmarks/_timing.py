"""What the benchmark scripts share: the median wall time of repeated calls."""
from __future__ import annotations

import statistics
import time


def median_time(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn``."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
