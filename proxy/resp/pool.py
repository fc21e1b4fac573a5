"""The RESP front end's slots: the event loop is one, the miss threads are the others.

MAX_PARALLEL counts the loop as a slot, as on HTTP. With MAX_PARALLEL=1 the one thread and the
loop take turns: a hit waits while a request is on the thread, so everything runs one at a
time, in arrival order. With N > 1, requests that may wait on Redis run on N - 1 threads (so
they never stall the loop) and hits are answered on the loop whatever the threads are doing:
a stalled Redis never delays a hit. Past the free threads, connections wait their turn in
arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")


class Waiter(Protocol):
    """A connection that stopped for want of a slot, and carries on when given one."""

    def process(self) -> None: ...


class MissPool:
    """MAX_PARALLEL threads for requests that may wait on Redis, and the queue for slots."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_parallel: int) -> None:
        self.max_parallel = max_parallel
        self.threads = max(1, max_parallel - 1)  # the loop is a slot of its own
        self.in_flight = 0  # requests running on the pool's threads
        self._loop = loop
        self._waiting: deque[Waiter] = deque()
        self._threads = ThreadPoolExecutor(self.threads, thread_name_prefix="resp-miss")

    @property
    def waiting(self) -> int:
        """Connections waiting for a slot."""
        return len(self._waiting)

    @property
    def full(self) -> bool:
        """No thread is free: a request that may wait on Redis must wait for one."""
        return self.in_flight >= self.threads

    @property
    def hits_wait(self) -> bool:
        """The loop is not free to answer a hit (MAX_PARALLEL=1 and a request is running)."""
        return self.max_parallel == 1 and self.in_flight > 0

    def wait_for_slot(self, waiter: Waiter) -> None:
        """Call `waiter.process()` once a slot is free, after those that waited before it."""
        if waiter not in self._waiting:
            self._waiting.append(waiter)

    def run(self, work: Callable[[], T], done: Callable[[Future[T]], None]) -> None:
        """Run `work` on a pool thread; `done` gets its future back on the loop."""
        self.in_flight += 1
        future = self._threads.submit(work)
        future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._finished, f, done))

    def _finished(self, future: Future[T], done: Callable[[Future[T]], None]) -> None:
        self.in_flight -= 1
        done(future)
        while self._waiting and not self.full:
            self._waiting.popleft().process()

    def shutdown(self) -> None:
        """Stop the threads; queued work is dropped (the connections are closing)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
