"""With Redis Sentinel: notice when the master moves, and make every part follow it.

redis-py's Sentinel client finds the master whenever a connection is made, but connections
already open stay where they are: after `SENTINEL FAILOVER`, the old master keeps answering
reads (it becomes a replica, or lingers as a master until Sentinel reconfigures it), and the
invalidation link would keep hearing the old master's writes only. So a thread asks the
Sentinels where the master is, every CHECK_SECONDS, and when the answer changes it closes the
pooled connections (the next read connects to the new master) and tells the listeners (the
invalidation link reconnects there, and the cache is suspended meanwhile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5


class Located(Protocol):
    """What the watch needs of the backend."""

    def master(self) -> tuple[str, int] | None: ...
    def drop_connections(self) -> None: ...


class MasterWatch:
    """The thread that follows the Sentinels' answer to "where is the master?"."""

    def __init__(self, backend: Located, listeners: Sequence[Callable[[], None]] = ()) -> None:
        self.backend = backend
        self.listeners = list(listeners)
        self.moves = 0  # times the master moved since start
        self._master: tuple[str, int] | None = None  # the first answer is recorded, not followed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="master-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CHECK_SECONDS * 4)

    def _run(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            self.check()

    def check(self) -> None:
        """Follow the master if the Sentinels name another one (no answer changes nothing)."""
        master = self.backend.master()
        if master is None or master == self._master:
            return
        if self._master is None:  # the first answer: nothing was anywhere else
            self._master = master
            return
        log.warning("the master moved to %s:%d: following it", *master)
        self._master = master
        self.moves += 1
        self.backend.drop_connections()
        for listener in self.listeners:
            listener()
