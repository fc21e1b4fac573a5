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
from typing import TypeVar

from proxy import resp_codec as wire
from proxy.cache import ReadThroughCache
from proxy.config import Settings
from proxy.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidKey,
    ProtocolError,
    ProxyError,
    WrongType,
)
from proxy.metrics import Recorder, RequestStats
from proxy.resp_commands import COMMANDS, unknown_command

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_GET_RUN = 64  # pipelined GETs looked up under one cache-lock acquisition
MAX_QUEUED_COMMANDS = 1024  # parsed but unanswered, per connection; then stop reading
MAX_CLIENTS_REPLY = wire.error("ERR max number of clients reached")
REFUSED_LINGER_SECONDS = 1.0
STOP_POLL_SECONDS = 0.05

# The error map: a typed error -> the RESP error line. `{}` is the error's own message.
ERROR_MAP: dict[type[ProxyError], str] = {
    WrongType: "WRONGTYPE Operation against a key holding the wrong kind of value",
    BackendTimeout: "TRYAGAIN {}",
    BackendUnavailable: "TRYAGAIN {}",
    BackendError: "ERR backend: {}",
    InvalidKey: "ERR {}",
}


def error_reply(exc: ProxyError) -> bytes:
    template = next(ERROR_MAP[cls] for cls in type(exc).__mro__ if cls in ERROR_MAP)
    return wire.error(template.format(exc))


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


def leading_get_keys(queue: deque[list[bytes]]) -> list[bytes]:
    """The keys of the GET commands at the head of `queue` (at most MAX_GET_RUN)."""
    keys: list[bytes] = []
    for command in queue:
        if len(command) != 2 or command[0] not in wire.GET_NAMES or len(keys) == MAX_GET_RUN:
            break
        keys.append(command[1])
    return keys


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
        self.clients = 0
        self.refused = 0
        self.in_flight = 0  # misses being fetched in the pool
        self.ids = itertools.count(1)
        self.connections: set[Connection] = set()
        self._waiting: deque[Connection] = deque()  # connections waiting for a free slot
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="resp-miss")
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._serve, name="resp-loop", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

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


class Connection(asyncio.Protocol):
    """One RESP client: parses its requests, answers them in order, tracks its protocol."""

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.cache = server.cache
        self.id = next(server.ids)
        self.protocol = 2  # until HELLO 3
        self.name: bytes | None = None
        self.parser = wire.RequestParser()
        self.queue: deque[list[bytes]] = deque()
        self.transport: asyncio.Transport
        self.fetching = False  # a miss of this connection is in the pool
        self.can_write = True
        self.reading = True
        self.closed = False
        self.quitting = False
        self.fatal: bytes | None = None  # a protocol error to send once earlier replies are out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.clients += 1
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()
        self.server.clients -= 1
        self.server.connections.discard(self)

    def eof_received(self) -> bool:
        # The client finished sending: answer what it asked, then close (not at once).
        self.quitting = True
        self.process()
        return True

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        self.process()

    def data_received(self, data: bytes) -> None:
        if self._answer_lone_get(data):
            return
        try:
            self.queue.extend(self.parser.feed(data))
        except ProtocolError as exc:
            # As Redis does: answer the complete commands before the bad frame, then the
            # error, then close (process() writes it once those answers are out).
            self.queue.extend(exc.commands_before)
            self.fatal = wire.error(f"ERR Protocol error: {exc}")
            self.transport.pause_reading()
            self.process()
            return
        if len(self.queue) > MAX_QUEUED_COMMANDS and self.reading:
            self.reading = False
            self.transport.pause_reading()
        self.process()

    def _answer_lone_get(self, data: bytes) -> bool:
        """Answer a lone GET hit on an idle connection at once; False leaves it to the
        general path (anything else, a miss, or a busy connection)."""
        server = self.server
        if self.queue or self.fetching or self.closed or not self.parser.empty:
            return False
        if not self.can_write or server.in_flight >= server.max_parallel:
            return False
        started = time.perf_counter()
        key = wire.lone_get_key(data)
        value = None if key is None else self.cache.cached(key)
        if value is None:
            return False
        self.transport.write(b"$%d\r\n%s\r\n" % (len(value), value))
        server.stats.record("hit", time.perf_counter() - started)
        return True

    def process(self) -> None:
        """Answer queued commands until one must wait (a miss, no free slot, full buffers)."""
        replies: list[bytes] = []
        queue, server = self.queue, self.server
        while queue and self.can_write and not (self.fetching or self.closed):
            if server.in_flight >= server.max_parallel:
                server.wait_for_slot(self)
                break
            started = time.perf_counter()
            hits = self.cache.cached_run(leading_get_keys(queue))  # the hot path
            if hits:
                for value in hits:
                    queue.popleft()
                    replies.append(b"$%d\r\n%s\r\n" % (len(value), value))
                server.stats.record("hit", time.perf_counter() - started, len(hits))
                continue
            reply = self.execute(queue.popleft())
            if reply is not None:
                replies.append(reply)
        if replies:
            self.transport.write(b"".join(replies))
        if self.fatal and not (self.queue or self.fetching or self.closed):
            self.transport.write(self.fatal)
            self.transport.close()
            self.closed = True
        elif self.quitting and not (self.queue or self.fetching or self.closed):
            self.transport.close()
            self.closed = True
        elif not self.reading and len(self.queue) < MAX_QUEUED_COMMANDS // 2:
            self.reading = True
            self.transport.resume_reading()

    def execute(self, command: list[bytes]) -> bytes | None:
        """The reply to one command, or None when it went to fetch a miss."""
        name = command[0].lower()
        spec = COMMANDS.get(name)
        if spec is None:
            return unknown_command(command)
        if not spec.min_args <= len(command) - 1 <= spec.max_args:
            return wire.error(f"ERR wrong number of arguments for '{name.decode()}' command")
        return spec.handler(self, command[1:])

    def fetch(self, work: Callable[[], T], render: Callable[[T], tuple[bytes, str]]) -> None:
        """Run `work` off the loop; `render` turns its result into the reply and the outcome
        counted in metrics. The reply (or the mapped error) is written when it arrives."""
        self.fetching = True
        started = time.perf_counter()
        self.server.fetch(work, lambda future: self._fetched(future, render, started))

    def _fetched(
        self, future: Future, render: Callable[[object], tuple[bytes, str]], started: float
    ) -> None:
        self.fetching = False
        try:
            reply, outcome = render(future.result())
        except ProxyError as exc:
            reply, outcome = error_reply(exc), "error"
        except Exception:
            log.exception("RESP request failed")
            reply, outcome = wire.error("ERR internal error in the proxy (logged)"), "error"
        self.server.stats.record(outcome, time.perf_counter() - started)
        if not self.closed:
            self.transport.write(reply)
            self.process()


class _Refused(asyncio.Protocol):
    """A client past MAX_CONNECTIONS: Redis's own error, then close once it has read it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(MAX_CLIENTS_REPLY)
        transport.write_eof()  # FIN after the error; its request is read and discarded
        asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, transport.close)

    def eof_received(self) -> bool:
        return False  # the client hung up: close now
