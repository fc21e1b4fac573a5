"""RESP front end: Redis clients (redis-cli, redis-py) read through the same cache as HTTP.

An asyncio event loop runs in its own thread inside the Gunicorn worker. Hits are answered on
the loop (the cache lock is held for map operations only); misses run on a pool of MAX_PARALLEL
threads, so a miss waiting on Redis never stalls other clients. At most MAX_PARALLEL requests
are processed at once, as on HTTP: past that, connections wait their turn in arrival order.
Replies on one connection always come back in request order (pipelining).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import uvloop

from proxy import resp_codec as wire
from proxy.cache import ReadThroughCache
from proxy.config import Settings
from proxy.metrics import Recorder, RequestStats
from proxy.resp_connection import Connection

log = logging.getLogger(__name__)

MAX_CLIENTS_REPLY = wire.error("ERR max number of clients reached")
REFUSED_LINGER_SECONDS = 1.0
STOP_POLL_SECONDS = 0.05


def start_resp_server(
    settings: Settings, cache: ReadThroughCache, stats: Recorder
) -> RespServer | None:
    """Serve RESP on PROXY_HOST:RESP_PORT over `cache`; None when RESP_PORT is 0."""
    if not settings.resp_port:
        return None
    return RespServer(
        cache,
        host=settings.proxy_host,
        port=settings.resp_port,
        max_parallel=settings.max_parallel,
        max_connections=settings.max_connections,
        stats=stats,
    ).start()


class RespServer:
    """The RESP listener, its connections and its miss pool, on a loop in its own thread."""

    def __init__(
        self,
        cache: ReadThroughCache,
        *,
        host: str,
        port: int,
        max_parallel: int,
        max_connections: int,
        stats: Recorder | None = None,
    ) -> None:
        self.cache = cache
        self.stats = stats or RequestStats()
        self.host, self.port = host, port
        self.max_parallel, self.max_connections = max_parallel, max_connections
        self.refused = 0
        self.in_flight = 0  # misses being fetched in the pool
        self.ids = itertools.count(1)
        self.connections: set[Connection] = set()
        self._waiting: deque[Connection] = deque()  # connections waiting for a free slot
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="resp-miss")
        # uvloop: libuv's C event loop. Measured with redis-benchmark (README, Performance):
        # ~1.5x the unpipelined GETs of asyncio's own loop, same code, back-to-back runs.
        self._loop = uvloop.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._serve, name="resp-loop", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def clients(self) -> int:
        """Connected RESP clients (for the limit and for metrics)."""
        return len(self.connections)

    def start(self) -> RespServer:
        """Listen and serve in the background; raises if the port cannot be bound."""
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop_accepting(self) -> None:
        """Close the listener (thread-safe); connected clients are still served."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._close_listener)

    def _close_listener(self) -> None:
        if self._server is not None and self._server.is_serving():
            self._server.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout`), then close all."""
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            self._loop.call_soon_threadsafe(self._stop_when_idle, deadline)
            self._thread.join(timeout + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                self._loop.create_server(self._protocol_for_new_client, self.host, self.port)
            )
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _protocol_for_new_client(self) -> asyncio.Protocol:
        if self.clients >= self.max_connections:
            self.refused += 1
            return _Refused()
        return Connection(self)

    def _stop_when_idle(self, deadline: float) -> None:
        self._close_listener()
        if self.in_flight and time.monotonic() < deadline:
            self._loop.call_later(STOP_POLL_SECONDS, self._stop_when_idle, deadline)
            return
        for connection in list(self.connections):
            connection.transport.close()
        self._loop.call_soon(self._loop.stop)  # after the closes have been flushed

    # Slots: at most max_parallel misses in flight; hits need a free slot too, so that
    # MAX_PARALLEL=1 means one request at a time, as on HTTP.

    def wait_for_slot(self, connection: Connection) -> None:
        if connection not in self._waiting:
            self._waiting.append(connection)

    def fetch(self, work: Callable[[], object], done: Callable[[Future], None]) -> None:
        """Run `work` (a miss) on the pool; `done` gets its future back on the loop."""
        self.in_flight += 1
        future = self._pool.submit(work)
        future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._fetched, f, done))

    def _fetched(self, future: Future, done: Callable[[Future], None]) -> None:
        self.in_flight -= 1
        done(future)
        while self._waiting and self.in_flight < self.max_parallel:
            self._waiting.popleft().process()


class _Refused(asyncio.Protocol):
    """A client past MAX_CONNECTIONS: Redis's own error, then close once it has read it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's, not a subclass: no isinstance
        transport.write(MAX_CLIENTS_REPLY)
        transport.write_eof()  # FIN after the error; its request is read and discarded
        asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, transport.close)

    def eof_received(self) -> bool:
        return False  # the client hung up: close now
