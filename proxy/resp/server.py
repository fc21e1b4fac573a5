"""The RESP listener: Redis clients (redis-cli, redis-py) read through the same cache as HTTP.

An asyncio event loop (uvloop) runs in its own thread inside the Gunicorn worker. Hits are
answered on the loop (the cache lock is held for map operations only); requests that may wait
on Redis run on the MissPool's threads, so a miss never stalls other clients. Replies on one
connection always come back in request order (pipelining).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from collections import Counter
from typing import Any, cast

import uvloop

from proxy.access import Access
from proxy.cache import ReadThroughCache
from proxy.logs import RateLimitedLog
from proxy.metrics import Recorder, RequestStats
from proxy.resp import codec as wire
from proxy.resp.connection import Connection
from proxy.resp.link import linger_after
from proxy.resp.pool import MissPool
from proxy.resp.session import Session

log = logging.getLogger(__name__)

MAX_CLIENTS_REPLY = wire.error("ERR max number of clients reached")
# uvloop's message when accept() fails for a reason libuv does not absorb (ENOBUFS, ENOMEM, or
# out of descriptors with its own spare gone): it then closes the listener for good.
LISTEN_FAILED = "error status in uv_stream_t.listen callback"
ACCEPT_BACKOFF = 0.5  # seconds before listening again after that
SWEEP_SECONDS = 1.0  # how often silent clients are looked for
STOP_POLL_SECONDS = 0.05


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
        request_timeout: float = 5.0,
        idle_timeout: float = 300.0,
        send_timeout: float = 30.0,
        access: Access | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.cache = cache
        self.access = access or Access.open()
        self.tls = tls  # TLS only on the port, when set
        self.stats = stats or RequestStats()
        self.host, self.port = host, port
        self.max_connections = max_connections
        # A new client's first command, or a command begun, must arrive within
        # `request_timeout` (KEEPALIVE_TIMEOUT); a client that has sent commands may then stay
        # silent for `idle_timeout` (RESP_IDLE_TIMEOUT; 0: for ever, as Redis's `timeout 0`).
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        # A client that takes none of its replies for this long is dropped (as HTTP's
        # SEND_TIMEOUT): it would otherwise hold its slot for as long as it likes.
        self.send_timeout = send_timeout
        self.refused = 0
        self.dropped: Counter[str] = Counter()  # clients disconnected by the proxy, by reason
        self.connections: set[Connection] = set()
        self.refusing: set[asyncio.BaseTransport] = set()  # refused, lingering to be read
        self.accepted = 0  # clients accepted since start; also the newest client's id
        self.started_at = time.monotonic()
        # uvloop: libuv's C event loop, for the per-GET cost of the loop itself
        # (docs/performance.md compares it with asyncio's own).
        self._loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self.pool = MissPool(self._loop, max_parallel)
        self._server: asyncio.Server | None = None
        self.accepting = True  # until stop_accepting()
        self.errors = RateLimitedLog(log)
        self._thread = threading.Thread(target=self._serve, name="resp-loop", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def clients(self) -> int:
        """Connected RESP clients (for the limit and for metrics)."""
        return len(self.connections)

    def info_fields(self) -> dict[str, int | str]:
        """INFO's live fields (a ServerView): the cache's figures are the whole cache's, HTTP
        reads included."""
        stats = self.cache.stats
        uptime = int(time.monotonic() - self.started_at)
        return {
            "process_id": os.getpid(),
            "tcp_port": self.port,
            "uptime_in_seconds": uptime,
            "uptime_in_days": uptime // 86400,
            "connected_clients": self.clients,
            "maxclients": self.max_connections,
            "used_memory": self.cache.held_bytes(),  # keys and values cached
            "maxmemory": self.cache.byte_capacity or 0,
            "total_connections_received": self.accepted,
            "rejected_connections": self.refused,
            "keyspace_hits": stats.lookups - stats.fetches - stats.coalesced,
            "keyspace_misses": stats.fetches + stats.coalesced,
            "evicted_keys": stats.evictions,
            "expired_keys": stats.expirations,
            "keys": self.cache.size(),
        }

    def config(self) -> dict[str, str]:
        """CONFIG GET's parameters that come from the settings (a ServerView)."""
        return {
            "maxclients": str(self.max_connections),
            "maxmemory": str(self.cache.byte_capacity or 0),
            "timeout": str(int(self.idle_timeout)),
            "port": str(self.port),
            "bind": self.host,
        }

    def start(self) -> RespServer:
        """Listen and serve in the background; raises if the port cannot be bound."""
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop_accepting(self) -> None:
        """Close the listener (thread-safe); connected clients are still served. A second
        SIGTERM calls it again while stop() runs, when the loop may have closed already."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed: no listener is left
                self._loop.call_soon_threadsafe(self._close_listener)

    def _close_listener(self) -> None:
        self.accepting = False
        if self._server is not None and self._server.is_serving():
            self._server.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout`), then close all."""
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            self._loop.call_soon_threadsafe(self._stop_when_idle, deadline)
            self._thread.join(timeout + 1)
        self.pool.shutdown()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._on_loop_error)
        try:
            self._loop.run_until_complete(self._listen())
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.call_later(SWEEP_SECONDS, self._sweep)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        server = await self._loop.create_server(
            self._protocol_for_new_client,
            self.host,
            self.port,
            ssl=self.tls,
            ssl_handshake_timeout=self.request_timeout if self.tls else None,
        )
        self.port = server.sockets[0].getsockname()[1]  # the kernel's pick for port 0
        self._server = server

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors the loop could not hand to a connection: logged at most once per interval
        (a flood of clients must not flood the log); a listener uvloop closed is reopened."""
        message = str(context.get("message", "loop error"))
        self.errors.warn("RESP: %s: %r", message, context.get("exception"), kind=message)
        if message == LISTEN_FAILED and self.accepting:
            loop.call_later(ACCEPT_BACKOFF, self._listen_again)

    def _listen_again(self) -> None:
        if self._server is not None:
            self._server.close()

        def retry_if_failed(attempt: asyncio.Future[None]) -> None:
            if not attempt.cancelled() and attempt.exception() is not None and self.accepting:
                self._on_loop_error(self._loop, {"message": LISTEN_FAILED})

        if self.accepting:
            self._loop.create_task(self._listen()).add_done_callback(retry_if_failed)

    def _protocol_for_new_client(self) -> asyncio.Protocol:
        if self.clients >= self.max_connections:
            self.refused += 1
            return _Refused(self.refusing, linger=len(self.refusing) < self.max_connections)
        self.accepted += 1
        session = Session(self.accepted, self, self.access, not self.access.required)
        return Connection(
            session,
            self.cache,
            self.pool,
            self.stats,
            clients=self.connections,
            dropped=self.dropped,
        )

    def _sweep(self) -> None:
        """Disconnect clients silent or not reading for too long (see the timeouts above)."""
        now = time.monotonic()
        for connection in list(self.connections):
            if not connection.can_write and now - connection.blocked_at > self.send_timeout:
                connection.link.drop("send_timeout")
            if not connection.waiting:
                continue
            silent = now - connection.active_at
            if not connection.parser.empty or not connection.greeted:
                if silent > self.request_timeout:
                    connection.link.drop("request_timeout")
            elif self.idle_timeout and silent > self.idle_timeout:
                connection.link.drop("idle_timeout")
        self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def _stop_when_idle(self, deadline: float) -> None:
        self._close_listener()
        if self.pool.in_flight and time.monotonic() < deadline:
            self._loop.call_later(STOP_POLL_SECONDS, self._stop_when_idle, deadline)
            return
        for connection in list(self.connections):
            connection.cut()
        self._loop.call_soon(self._loop.stop)  # after the closes have been flushed


class _Refused(asyncio.Protocol):
    """A client past MAX_CONNECTIONS: Redis's own error, then close once it has read it.

    At most MAX_CONNECTIONS refused clients linger at once (`lingering`); past that a refused
    client is closed as soon as the error is written, so descriptors stay bounded."""

    def __init__(self, lingering: set[asyncio.BaseTransport], linger: bool) -> None:
        self.lingering = lingering
        self.linger = linger
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's, not a subclass: no isinstance
        if not self.linger:
            transport.write(MAX_CLIENTS_REPLY)
            transport.close()
            return
        self.transport = transport
        self.lingering.add(transport)
        linger_after(transport, MAX_CLIENTS_REPLY)  # its request is read and discarded

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.lingering.discard(self.transport)

    def eof_received(self) -> bool:
        return False  # the client hung up: close now
