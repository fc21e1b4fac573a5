"""Figures of the proxy's worker sampled while a test runs: its memory, its descriptors."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def rss(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def peak(measure: Callable[[], int], every: float = 0.01) -> Iterator[list[int]]:
    """[before, peak] of `measure()` while the block runs, sampled every `every` seconds."""
    figures = [measure(), measure()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            figures[1] = max(figures[1], measure())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
