"""Timing shared by the benchmark scripts.

They run as `python scripts/bench_*.py`, so this folder is on their import path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def best_times(
    repeats: int, runs: dict[str, Callable[[], object]], device: str
) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each run, interleaved so machine load hits all alike.

    On a shared CPU the process CPU time (all its threads) is the steadier measure.
    """
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if device == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def timed(run: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu
