"""Threads that load the proxy while a test does something else, for the length of a block."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Self


class Background:
    """Runs each of `loops` on its own thread from entering the block until leaving it; a
    loop runs until `stop` is set, counting what it sees in `outcomes`."""

    def __init__(self, loops: list[Callable[[], None]], join_seconds: float = 15) -> None:
        self.outcomes: Counter[str] = Counter()
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=loop) for loop in loops]
        self._join_seconds = join_seconds

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(self._join_seconds)
