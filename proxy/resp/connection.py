"""One RESP client connection: parses its requests, answers them in order, tracks its session.

A GET is recognised once, as it arrives: a frame of nothing but GETs by `codec.get_keys`
without the general parser, any other GET as the parser hands it over. The queue then holds
a GET as its key (bytes) and every other command as its argument list. Runs of GETs are
peeked under one cache-lock acquisition and their hits answered on the event loop; a GET the
peek did not find goes to the pool as a lookup, as does anything else that may wait on Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from itertools import repeat
from typing import Any, cast

from proxy.access import PROTECTED_MODE_MESSAGE
from proxy.cache import ReadThroughCache
from proxy.config import host_port
from proxy.errors import (
    ProtocolError,
    ProxyError,
)
from proxy.metrics import Recorder
from proxy.resp import codec as wire
from proxy.resp import commands
from proxy.resp.commands import Close, Deferred, Result, error_reply
from proxy.resp.link import Link
from proxy.resp.pool import MissPool
from proxy.resp.session import Session

log = logging.getLogger(__name__)

MAX_GET_RUN = 64  # pipelined GETs peeked under one cache-lock acquisition
# Pipelined GETs whose misses are looked up together, in one round trip to Redis (they are
# answered together too, so a long run is bounded like a long MGET).
MAX_MISS_RUN = 1000
# Commands one connection has answered in one turn of the loop before the others get theirs:
# a 100,000-GET pipeline then delays other clients by a batch, not by the whole pipeline.
MAX_BATCH = 512
# Bytes of a longer read parsed per turn of the loop (about 1,400 pipelined GETs): parsing a
# whole read (up to 256 KiB from uvloop) at once would itself stall other clients.
INPUT_SLICE = 32 * 1024
Queued = bytes | list[bytes]  # a GET's key, or any other command
INTERNAL_ERROR = wire.error("ERR internal error in the proxy (logged)")
DENIED = wire.error("DENIED " + PROTECTED_MODE_MESSAGE)


def address(name: Any) -> str:
    """A socket's address as Redis shows it (host:port; an IPv6 host bracketed)."""
    if not isinstance(name, tuple) or len(name) < 2:
        return str(name or "")
    return host_port(name[0], name[1])


def queued(command: list[bytes], allowed: Callable[[bytes], bool] | None = None) -> Queued:
    """How a parsed command waits in the queue: a well-formed GET as its key, unless the key
    is outside KEY_PATTERNS (`allowed`), which the command table answers."""
    is_get = len(command) == 2 and command[0].upper() == b"GET"
    if is_get and (allowed is None or allowed(command[1])):
        return command[1]
    return command


class Connection(asyncio.Protocol):
    """One RESP client: parses its requests, answers them in order, tracks its session."""

    def __init__(
        self,
        session: Session,
        cache: ReadThroughCache,
        pool: MissPool,
        stats: Recorder,
        *,
        clients: set[Connection],
        dropped: Counter[str],
    ) -> None:
        self.session = session
        self.cache = cache
        self.pool = pool
        self.stats = stats
        self.clients = clients
        self.dropped = dropped
        self.parser = wire.RequestParser()
        self.queue: deque[Queued] = deque()
        self.link: Link
        self.deferred = False  # a request of this connection is on the pool
        self.can_write = True
        self.blocked_at = 0.0
        self.unparsed = b""  # read but not parsed yet: a deep pipeline is parsed a slice a turn
        self.quitting = False
        self.fatal: bytes | None = None  # a protocol error to send once earlier replies are out
        self.active_at = time.monotonic()  # connected, or last sent a byte
        self.greeted = False  # has sent a complete command (see RespServer's idle sweep)
        self.allowed = session.access.key_allowed  # KEY_PATTERNS; None: every key

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport: an asyncio.Transport in all but name (not a subclass)
        self.link = Link(cast(asyncio.Transport, transport), self.dropped)
        self.session.peer = address(transport.get_extra_info("peername"))
        self.session.local = address(transport.get_extra_info("sockname"))
        self.clients.add(self)
        peer = transport.get_extra_info("peername")
        if not self.session.access.admits(peer):  # protected mode: Redis's DENIED, then close
            self.session.access.refused("resp", "protected_mode", peer)
            self.link.close_after_error(DENIED)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.closed = True
        self.queue.clear()
        self.clients.discard(self)

    @property
    def closed(self) -> bool:
        return self.link.closed

    def cut(self) -> None:
        """Close now: the worker is stopping."""
        self.link.cut(str(self.session.id), len(self.queue) + self.deferred)

    def eof_received(self) -> bool:
        if self.closed:  # lingering after a protocol error: the client has hung up
            return False
        # The client finished sending: answer what it asked, then close (not at once).
        self.quitting = True
        self.process()
        return True

    def pause_writing(self) -> None:
        self.can_write = False
        self.blocked_at = time.monotonic()  # replies stopped being taken (see the sweep)

    def resume_writing(self) -> None:
        self.can_write = True
        self.process()

    @property
    def waiting(self) -> bool:
        """Waiting for the client (nothing asked is unanswered): a timeout may close it."""
        return not (self.queue or self.deferred or self.closed or self.unparsed)

    def data_received(self, data: bytes) -> None:
        if self.link.closed:
            return  # read and dropped while lingering after a protocol error
        self.active_at = time.monotonic()
        if self.unparsed or len(data) > INPUT_SLICE:  # a deep pipeline: a slice per turn
            self.unparsed += data
            self.link.pause_reading()
            self._take_slice()
        else:
            self._take(data)

    def _take_slice(self) -> None:
        data, self.unparsed = self.unparsed[:INPUT_SLICE], self.unparsed[INPUT_SLICE:]
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Answer or queue the commands `data` completes."""
        if self._answer_gets(data):
            self.greeted = True
            return
        try:
            parsed = self.parser.feed(data)
        except ProtocolError as exc:
            # As Redis does: answer the complete commands before the bad frame, then the
            # error, then close (process() writes it once those answers are out).
            self.queue.extend(map(queued, exc.commands_before, repeat(self.allowed)))
            self.fatal = wire.error(f"ERR Protocol error: {exc}")
            self.unparsed = b""
            self.link.pause_reading()
            self.process()
            return
        self.greeted = self.greeted or bool(parsed)
        self._enqueue(map(queued, parsed, repeat(self.allowed)))

    def _enqueue(self, requests: Iterable[Queued]) -> None:
        """Queue requests and answer what can be now. While some wait, reading pauses: what a
        connection holds unanswered is one slice's worth of commands, whatever it sends."""
        self.queue.extend(requests)
        self.process()
        if self.queue:
            self.link.pause_reading()

    def _answer_gets(self, data: bytes) -> bool:
        """Answer a frame of nothing but GETs on an idle connection: leading hits at once, the
        first miss to the pool, the rest queued. False leaves the frame to the parser
        (anything else, or a connection with requests still waiting)."""
        if self.queue or self.deferred or self.link.closed or not self.parser.empty:
            return False
        if not (self.can_write and self.session.authenticated) or self.pool.hits_wait:
            return False
        started = time.perf_counter()
        keys = wire.get_keys(data)
        if keys is None or (self.allowed is not None and not all(map(self.allowed, keys))):
            return False
        if len(keys) == 1:  # unpipelined, the commonest frame: no lists to build
            value = self.cache.peek(keys[0])
            if value is None:
                self._miss(keys[0])
            else:
                self.link.send_value(value)
                self.stats.record("hit", time.perf_counter() - started)
        elif len(keys) <= MAX_GET_RUN:
            self._answer_run(keys, started)
        else:  # a deep pipeline: process() answers it in bounded runs
            self._enqueue(keys)
        return True

    def _answer_run(self, keys: list[bytes], started: float) -> None:
        """Answer the leading hits of a run of GETs; from the first miss on, they go to the
        pool together (process())."""
        values = self.cache.peek_run(keys)
        hits = len(values)
        if hits:
            self.link.send(wire.bulks(values))
            self.stats.record("hit", time.perf_counter() - started, hits)
        if hits < len(keys):  # keys[hits] missed: it and the rest are fetched together
            self._enqueue(keys[hits:])

    def _miss(self, key: bytes) -> None:
        """A GET the peek did not find: to a thread now, or first in line for one."""
        if self.pool.full:
            self.queue.appendleft(key)
            self.pool.wait_for_slot(self)
        else:
            self._defer(commands.read_key(self.session.protocol, key))

    def process(self) -> None:
        """Answer queued requests until one must wait (on the pool, a slot, full buffers) or
        this turn's batch is done (the rest in the loop's next turn, after other clients)."""
        replies: list[bytes] = []
        queue = self.queue
        budget = MAX_BATCH
        while queue and self.can_write and not (self.deferred or self.closed):
            if self.pool.hits_wait:
                self.pool.wait_for_slot(self)
                break
            if budget <= 0:
                self.link.next_turn(self.process)
                break
            head = queue[0]
            if isinstance(head, bytes) and not self.session.authenticated:
                queue[0] = head = [b"GET", head]  # AUTH is checked by the command table
            if isinstance(head, bytes):
                answered = self._answer_hits(replies)
                if answered:
                    budget -= answered
                    continue
                result: Result = commands.read_keys(self.session.protocol, self._get_run())
            else:
                result = self._execute(head)
            if isinstance(result, Deferred) and self.pool.full:  # it needs a thread: wait
                self.pool.wait_for_slot(self)  # (deferred commands are pure: run again then)
                break
            owed = result.requests if isinstance(result, Deferred) else 1
            for _ in range(owed):
                queue.popleft()
            budget -= owed
            self._apply(result, replies)
        if replies:
            self.link.send(replies)
        self._after_processing()

    def _execute(self, command: list[bytes]) -> Result:
        """A command's result; a bug in it is answered in its place, so replies stay in order."""
        try:
            return commands.execute(self.session, command)
        except Exception:
            log.exception("RESP command failed")
            return INTERNAL_ERROR

    def _get_run(self) -> list[bytes]:
        """The GETs at the head of the queue (a run the peek stopped at): their misses go to
        Redis together, one round trip per MAX_BATCH_KEYS."""
        keys: list[bytes] = []
        for request in self.queue:
            if not isinstance(request, bytes) or len(keys) == MAX_MISS_RUN:
                break
            keys.append(request)
        return keys

    def _answer_hits(self, replies: list[bytes]) -> int:
        """Peek the run of GETs at the head of the queue; answer its leading hits (how many)."""
        started = time.perf_counter()
        keys: list[bytes] = []
        for request in self.queue:
            if not isinstance(request, bytes) or len(keys) == MAX_GET_RUN:
                break
            keys.append(request)
        values = self.cache.peek_run(keys)
        if not values:
            return 0
        for _ in values:
            self.queue.popleft()
        replies += wire.bulks(values)
        self.stats.record("hit", time.perf_counter() - started, len(values))
        return len(values)

    def _apply(self, result: Result, replies: list[bytes]) -> None:
        if isinstance(result, bytes):
            replies.append(result)
        elif isinstance(result, Deferred):
            self._defer(result)
        else:
            self._close_after(result, replies)

    def _close_after(self, result: Close, replies: list[bytes]) -> None:
        replies.append(result.reply)
        self.queue.clear()  # nothing after QUIT is answered
        self.quitting = True

    def _after_processing(self) -> None:
        """Close once everything is answered if the client is leaving; resume reading."""
        finished = self.waiting  # everything asked is answered
        if finished and self.fatal and not self.quitting:
            self.link.close_after_error(self.fatal)
        elif finished and (self.fatal or self.quitting):
            self.link.close(self.fatal or b"")
        elif self.unparsed:
            if not (self.queue or self.deferred or self.closed or self.fatal):
                self.link.next_turn(self._take_slice)
        elif not (self.queue or self.fatal or self.quitting):
            self.link.resume_reading()

    def _defer(self, deferred: Deferred[Any]) -> None:
        """Run a read on the pool; its reply (or the mapped error) is written when it is done."""
        self.deferred = True
        started = time.perf_counter()
        work = partial(deferred.work, self.cache)
        self.pool.run(work, partial(self._deferred_done, deferred, started))

    def _deferred_done(self, deferred: Deferred[Any], started: float, future: Future[Any]) -> None:
        self.deferred = False
        try:
            reply, outcome = deferred.render(future.result())
        except ProxyError as exc:
            reply, outcome = [error_reply(exc)] * deferred.requests, "error"
        except Exception:
            log.exception("RESP request failed")
            reply, outcome = [INTERNAL_ERROR] * deferred.requests, "error"
        self.stats.record(outcome, time.perf_counter() - started, deferred.requests)
        if not self.closed:
            self.link.send(reply)
            self.process()
