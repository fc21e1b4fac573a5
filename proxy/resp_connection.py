"""One RESP client connection: parses its requests, answers them in order, tracks its protocol.

Hits are answered on the event loop (runs of pipelined GETs under one cache-lock acquisition;
a frame of nothing but GETs without the general parser at all); everything that needs Redis
goes through its RespServer's miss pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar, cast

from proxy import resp_codec as wire
from proxy.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidKey,
    ProtocolError,
    ProxyError,
    WrongType,
)
from proxy.resp_commands import COMMANDS, unknown_command

if TYPE_CHECKING:
    from proxy.resp import RespServer

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_GET_RUN = 64  # pipelined GETs looked up under one cache-lock acquisition
MAX_QUEUED_COMMANDS = 1024  # parsed but unanswered, per connection; then stop reading
GET = b"GET"

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


def leading_get_keys(queue: deque[list[bytes]]) -> list[bytes]:
    """The keys of the GET commands at the head of `queue` (at most MAX_GET_RUN)."""
    keys: list[bytes] = []
    for command in queue:
        if len(command) != 2 or command[0] not in wire.GET_NAMES or len(keys) == MAX_GET_RUN:
            break
        keys.append(command[1])
    return keys


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
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()
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
        if self._answer_gets(data):
            return
        try:
            commands = self.parser.feed(data)
        except ProtocolError as exc:
            # As Redis does: answer the complete commands before the bad frame, then the
            # error, then close (process() writes it once those answers are out).
            self.queue.extend(exc.commands_before)
            self.fatal = wire.error(f"ERR Protocol error: {exc}")
            self.transport.pause_reading()
            self.process()
            return
        self._enqueue(commands)

    def _enqueue(self, commands: Iterable[list[bytes]]) -> None:
        """Queue parsed commands (reading pauses while too many wait) and answer what can be."""
        self.queue.extend(commands)
        if len(self.queue) > MAX_QUEUED_COMMANDS and self.reading:
            self.reading = False
            self.transport.pause_reading()
        self.process()

    def _answer_gets(self, data: bytes) -> bool:
        """Answer a frame of nothing but GETs on an idle connection: leading hits at once, the
        rest queued. False leaves the frame to the parser (anything else, a busy connection)."""
        server = self.server
        if self.queue or self.fetching or self.closed or not self.parser.empty:
            return False
        if not self.can_write or server.in_flight >= server.max_parallel:
            return False
        started = time.perf_counter()
        keys = wire.get_keys(data)
        if keys is None:
            return False
        hits = 0
        if len(keys) == 1:  # unpipelined, the commonest frame: no lists to build
            value = self.cache.cached(keys[0])
            if value is not None:
                replies, hits = wire.bulk(value), 1
        elif len(keys) <= MAX_GET_RUN:  # deeper pipelines: process() answers in bounded runs
            replies, hits = self._leading_hits(keys)
        if hits:
            self.transport.write(replies)
            server.stats.record("hit", time.perf_counter() - started, hits)
        if hits < len(keys):  # a miss, or a deep pipeline: the queue answers the rest in order
            self._enqueue([GET, key] for key in keys[hits:])
        return True

    def _leading_hits(self, keys: list[bytes]) -> tuple[bytes, int]:
        """The replies to the leading `keys` that are cache hits, and how many there are."""
        values = self.cache.cached_run(keys)
        return wire.bulks(values), len(values)

    def process(self) -> None:
        """Answer queued commands until one must wait (a miss, no free slot, full buffers)."""
        replies: list[bytes] = []
        queue, server = self.queue, self.server
        while queue and self.can_write and not (self.fetching or self.closed):
            if server.in_flight >= server.max_parallel:
                server.wait_for_slot(self)
                break
            started = time.perf_counter()
            answered, hits = self._leading_hits(leading_get_keys(queue))
            if hits:
                for _ in range(hits):
                    queue.popleft()
                replies.append(answered)
                server.stats.record("hit", time.perf_counter() - started, hits)
                continue
            reply = self.execute(queue.popleft())
            if reply is not None:
                replies.append(reply)
        if replies:
            self.transport.write(b"".join(replies))
        finished = not (self.queue or self.fetching or self.closed)
        if finished and (self.fatal or self.quitting):
            if self.fatal:
                self.transport.write(self.fatal)
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
