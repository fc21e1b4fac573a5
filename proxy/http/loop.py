"""gthread with its poller owning every HTTP connection: no thread waits on a client.

design: stock gthread (Gunicorn 27.0.1, pinned) hands each readable connection to a pool
thread, which reads the request, runs the app and writes the answer on the client's socket.
For a cache proxy that costs twice: a hit pays a thread round trip for a microsecond lookup,
and a client that sends slowly or never reads holds a thread, so a few of them take the whole
front end down. Here the poller thread (the loop) does all socket I/O:

* it reads what a client sends and finds whole requests in it (proxy/http/framing.py);
* it answers canonical `/get/` hits itself (proxy/http/onloop.py), byte for byte as Flask would;
* any other request goes to a pool thread *whole*: Gunicorn's parser and the Flask app run on
  the bytes the loop read, and their answer is collected (proxy/http/connection.py) for the
  loop to write as the client's socket allows;
* a client that dribbles its request, or does not read its answers, holds only its connection:
  the loop gives it KEEPALIVE_TIMEOUT to send a request and SEND_TIMEOUT to take an answer.

MAX_PARALLEL counts the loop as one slot: with 1, a hit waits for a request on the thread (so
everything runs one at a time, in arrival order); with N > 1 the pool has N - 1 threads and the
loop answers hits whatever they are doing. Past MAX_CONNECTIONS a client gets 503 at once.
The proxy's worker (proxy/worker.py) subclasses this one to own the service and answer hits;
LoopWorker alone, without hits on the loop, serves the benchmark's Flask floor.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gunicorn
from gunicorn import http
from gunicorn.sock import ssl_context
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from proxy.access import Access
from proxy.http.accounting import PENDING_LINES, Finish
from proxy.http.connection import CapturedSocket, Client, Deadlines, TlsClient, gunicorn_error
from proxy.http.framing import scan
from proxy.http.onloop import LoopHits
from proxy.http.refusals import (
    HTTP_DENIED,
    HTTP_REFUSAL,
    HTTP_TIMEOUT,
    Lingerer,
    Spare,
    hung_up,
)
from proxy.logs import RateLimitedLog

TESTED_GUNICORN = (27, 0, 1)
SEND_TIMEOUT = 30.0  # a client that takes none of its answer for this long is dropped
TICK = 0.25  # the loop's longest sleep: deadlines are kept to about this
# The worker's drain ends this long before GRACEFUL_TIMEOUT, when the arbiter kills it (its
# clock starts a little earlier): what is cut is then cut, and logged, by the worker itself.
STOP_MARGIN = 0.5
# accept() errors that mean "no descriptor now" (the process's or the system's limit, or kernel
# memory): the worker backs off instead of dying.
OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_BACKOFF = 0.1  # seconds without accepting after running out of descriptors
log = logging.getLogger(__name__)
Served = tuple[list[bytes], bool, list[Finish]]  # what a pool thread hands back (see _serve)


class LoopWorker(ThreadWorker):
    """gthread whose poller owns the connections (see the module's design note)."""

    hits_on_loop = False  # ProxyWorker: the loop answers hits, and is a slot of its own
    hits: LoopHits | None = None  # what answers them (set when the service is built)
    access: Access | None = None  # protected mode (set when the service is built)
    tls: ssl.SSLContext | None = None  # set in run() when Gunicorn's TLS settings are

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client_limit = self.cfg.worker_connections
        self.worker_connections = float("inf")  # gthread's own limit: we refuse, not stall
        # gthread closes after an answer past `worker_connections - threads` kept-alive
        # connections; every connection within the limit may stay here.
        self.max_keepalived = self.client_limit
        self.refused = 0
        self.dropped: Counter[str] = Counter()  # clients disconnected by the loop, by reason
        self.accept_again_at = 0.0  # accepting paused until then (out of descriptors)
        self.stop_by: float | None = None  # when the drain after SIGTERM ends (see _drain)
        self.descriptor_warnings = RateLimitedLog(log)
        self.in_flight = 0  # requests on pool threads (running or queued)
        self.sequential = self.cfg.threads == 1  # MAX_PARALLEL=1 (read once: cfg is slow)
        self.connections: dict[socket.socket, Client] = {}
        self.idle = Deadlines(self.cfg.keepalive)  # waiting for a request
        # From a request's first byte to its last: as long as an idle client may stay.
        self.reading = Deadlines(self.cfg.keepalive)
        self.writing = Deadlines(SEND_TIMEOUT)  # an answer waiting for the client to read it

    @property
    def clients(self) -> int:
        """Connected HTTP clients (for metrics)."""
        return int(self.nr_conns)

    @property
    def loop_is_free(self) -> bool:
        """May the loop answer a hit now? Not while a request runs with MAX_PARALLEL=1."""
        return not (self.sequential and self.in_flight)

    def get_thread_pool(self) -> ThreadPoolExecutor:
        threads = self.cfg.threads
        if self.hits_on_loop and threads > 1:
            threads -= 1  # the loop is a slot of its own
        return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")

    def init_process(self) -> None:
        if gunicorn.version_info != TESTED_GUNICORN:
            self.log.warning(
                "proxy worker was tested with Gunicorn %s, running %s",
                ".".join(map(str, TESTED_GUNICORN)),
                gunicorn.__version__,
            )
        super().init_process()

    def run(self) -> None:
        # TLS through Gunicorn's own settings (certfile, keyfile, ca_certs, cert_reqs and the
        # ssl_context hook gunicorn.conf.py sets); the loop drives it (TlsClient).
        self.tls = ssl_context(self.cfg) if self.cfg.is_ssl else None
        self.lingerer = Lingerer(self.poller, self.client_limit)
        self.spare = Spare()
        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            self.wait_for_and_dispatch_events(TICK)
            if not self.is_parent_alive():
                break
            now = time.monotonic()
            self._expire(now)
            if self.accept_again_at and now >= self.accept_again_at:
                self.accept_again_at = 0.0
                self.set_accept_enabled(True)
        self._drain()

    def _drain(self) -> None:
        """After SIGTERM: finish requests in progress; idle clients get STOP_KEEPALIVE_LINGER
        to send one more (answered with `Connection: close`), as in stock gthread. The
        listeners close first (the arbiter has closed its copies): a newcomer is refused by
        the kernel, rather than queued in the backlog and reset when the worker exits."""
        self.set_accept_enabled(False)
        for listener in self.sockets:
            listener.close()
        now = time.monotonic()
        self.idle.cap(now + STOP_KEEPALIVE_LINGER)
        self.stop_by = now + max(STOP_MARGIN, self.cfg.graceful_timeout - STOP_MARGIN)
        while self.connections and time.monotonic() < self.stop_by:
            self.notify()
            self.wait_for_and_dispatch_events(TICK)
            self._expire(time.monotonic())
        for client in list(self.connections.values()):
            self._cut(client)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()

    def _cut(self, client: Client) -> None:
        """Close a connection still busy at GRACEFUL_TIMEOUT, saying what it loses."""
        unsent = sum(len(buffer) for buffer in client.out)
        if unsent or client.busy:
            log.warning(
                "HTTP connection from %s cut at GRACEFUL_TIMEOUT: %d bytes sent, %d not sent%s",
                client.address[0] if client.address else "?",
                client.sent,
                unsent,
                ", a request still running" if client.busy else "",
            )
        self._close(client, graceful=False)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            data = key.data
            if type(data) is Client or type(data) is TlsClient:  # not isinstance: the hot path
                self._on_event(data)
            else:
                data(key.fileobj)

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            if exc.errno not in OUT_OF_DESCRIPTORS:
                raise
            self._out_of_descriptors(listener, exc)
            return
        if self.nr_conns >= self.client_limit:
            self._reap_departed()
        if self.nr_conns >= self.client_limit:
            self.refused += 1
            self.lingerer.refuse(sock, self._plain(HTTP_REFUSAL))
            return
        if self.access is not None and not self.access.admits(address):
            self.access.refused("http", "protected_mode", address)
            self.lingerer.refuse(sock, self._plain(HTTP_DENIED))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is None:
            client = Client(sock, address, listener.getsockname())
        else:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            client = TlsClient(sock, address, listener.getsockname())
        self.nr_conns += 1
        self.connections[sock] = client
        self._settle(client)

    def _plain(self, answer: bytes) -> bytes:
        """A refusal's answer: under TLS none (it would need a handshake first); closed."""
        return answer if self.tls is None else b""

    def _out_of_descriptors(self, listener: socket.socket, exc: OSError) -> None:
        """No descriptor for a newcomer (the process or system limit): refuse it with the
        spare descriptor, then stop accepting for a moment; everyone connected is served on."""
        self.refused += self.spare.refuse(listener, self._plain(HTTP_REFUSAL))
        self.set_accept_enabled(False)
        self.accept_again_at = time.monotonic() + ACCEPT_BACKOFF
        self.descriptor_warnings.warn("HTTP accept failed, pausing accepts: %s", exc)

    def _reap_departed(self) -> None:
        """Stop counting idle clients that already left, so their slots are free at once (a
        hang-up and a newcomer can arrive in one poll round, the newcomer first)."""
        self.method_queue.run_callbacks(None)  # requests just finished: settle them first
        for client in self.idle:
            if hung_up(client.sock):
                self._close(client, graceful=False)

    def _on_event(self, client: Client) -> None:
        if client.events == selectors.EVENT_WRITE:
            self._carry_on(client)  # requests read while the answers were stuck, too
        else:
            self._read(client)

    def _read(self, client: Client) -> None:
        data = client.read()
        if data is None:
            return
        if not data:  # the client has gone, or sends no more: answer nothing further
            # (a failed TLS handshake, e.g. a plaintext client: closed without a reset)
            self._close(client, graceful=client.handshaking)
            return
        client.received(data)
        self._carry_on(client)

    def _carry_on(self, client: Client) -> None:
        """Answer what can be answered, write what the socket takes, then wait for the rest."""
        if not client.closing:
            self._advance(client)
        if client.out and not client.flush():
            self._close(client, graceful=False)
            return
        self._settle(client)

    def _advance(self, client: Client) -> None:
        """Answer the whole requests read so far, in order, until one goes to a thread."""
        buf, pos = client.inbuf, 0
        while pos < len(buf) and not (client.busy or client.closing):
            framed = scan(buf, pos)
            if framed is None:
                break
            if framed.canonical is not None and self.hits is not None and self.loop_is_free:
                answered = self.hits.answer(framed.canonical, closing=not self.alive)
                if answered is not None:
                    buffers, keep_alive, finish = answered
                    client.queue(buffers, [finish] if finish else [])
                    client.closing = not keep_alive
                    pos = framed.end
                    continue
            request = bytes(buf[pos : framed.end])
            self._hand_over(client, request, framed.exact, framed.oversized)
            pos = framed.end
        client.inbuf = buf[pos:] if pos else buf

    def _hand_over(self, client: Client, request: bytes, exact: bool, oversized: bool) -> None:
        """Run one whole request on a pool thread; its answer comes back to the loop."""
        client.busy = True
        self.in_flight += 1
        future = self.tpool.submit(self._serve, client, request)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self._served, client, done, exact, oversized)
        )

    def _serve(self, client: Client, request: bytes) -> Served:
        """On a pool thread: Gunicorn parses `request` and the app answers it, into memory.
        Returns the answer's buffers, whether the connection may serve another request, and
        its access lines (written once the loop has sent the answer)."""
        sock = CapturedSocket(request)
        conn = TConn(self.cfg, sock, client.address, client.server)
        # The request is all there and already out of any TLS: Gunicorn's parser reads it as
        # it is (init() would wrap the captured socket in TLS, or wait for more).
        conn.initialized = conn.data_ready = True
        conn.parser = http.get_parser(self.cfg, sock, client.address)
        lines: list[Finish] = []
        waiting = PENDING_LINES.set(lines)
        try:
            keep_alive = self.handle(conn) is True
        finally:
            PENDING_LINES.reset(waiting)
        leftover = sock.unread or (conn.parser and conn.parser.unreader.buf.getvalue())
        return sock.written, keep_alive and not leftover and not sock.shut, lines

    def _served(self, client: Client, future: Future[Any], exact: bool, oversized: bool) -> None:
        """Back on the loop: queue the thread's answer, then carry on with the connection."""
        self.in_flight -= 1
        client.busy = False
        try:
            written, keep_alive, lines = future.result()
        except Exception:
            log.exception("HTTP request failed outside the app")
            written, keep_alive, lines = [], False, []
        if not written and oversized:  # Gunicorn wanted more head than the loop keeps
            written = [gunicorn_error(431, "Request Header Fields Too Large", "head too long")]
        client.queue(written, lines)
        client.closing = client.closing or not (keep_alive and exact)
        if client.sock.fileno() < 0:
            return  # closed while the thread ran (the worker is stopping)
        self._carry_on(client)

    def _settle(self, client: Client) -> None:
        """Watch the socket for what the connection waits for, under the matching deadline."""
        now = time.monotonic()
        if client.busy:
            events, timer = 0, None
        elif client.out:
            events, timer = selectors.EVENT_WRITE, self.writing
        elif client.closing:
            self._close(client, graceful=True)
            return
        else:
            events = selectors.EVENT_READ
            timer = self.reading if client.inbuf else self.idle
        self._watch(client, events)
        if timer is None:
            if client.timer is not None:
                client.timer.discard(client)
        elif timer is not client.timer or timer is not self.reading:
            timer.start(client, now)  # a request's deadline runs from its first byte

    def _watch(self, client: Client, events: int) -> None:
        if events == client.events:
            return
        if not client.events:
            self.poller.register(client.sock, events, client)
        elif not events:
            self.poller.unregister(client.sock)
        else:
            self.poller.modify(client.sock, events, client)
        client.events = events

    def _expire(self, now: float) -> None:
        for client in self.idle.expired(now):
            self._close(client, graceful=False)
        for client in self.reading.expired(now):
            self.dropped["request_timeout"] += 1
            client.inbuf, client.out, client.closing = b"", [HTTP_TIMEOUT], True
            client.flush()
            self._close(client, graceful=True)
        for client in self.writing.expired(now):
            self.dropped["send_timeout"] += 1
            self._close(client, graceful=False)
        self.lingerer.expire()

    def _close(self, client: Client, graceful: bool) -> None:
        """Forget a connection (its slot is free at once) and close it."""
        if self.connections.pop(client.sock, None) is None:
            return
        client.finish_sent(everything=True)  # access lines of answers cut short: until now
        self._watch(client, 0)
        if client.timer is not None:
            client.timer.discard(client)
        self.nr_conns -= 1
        if graceful:
            client.end()
            self.lingerer.close(client.sock)
        else:
            client.sock.close()
