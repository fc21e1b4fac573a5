"""The Gunicorn worker: gthread, changed so the client limit refuses instead of stalling.

Stock gthread (Gunicorn 27.0.1, pinned) has behaviours a cache proxy cannot keep:

* at `worker_connections` it stops calling accept(), so extra clients wait unanswered in the
  kernel backlog for as long as the connected ones stay (keep-alive included);
* it hands every new connection to a pool thread that waits up to 5 s for the first bytes, so
  with MAX_PARALLEL=1 one silent client stalls everybody for 5 s;
* its graceful close runs on the event-loop thread and blocks up to 2 s until the client hangs
  up, freezing accept and dispatch for every client meanwhile;
* it keeps only `worker_connections - threads` connections alive and closes the others after
  each response.

ClientLimitWorker always accepts. Past the limit it answers 503 at once and closes; under it, a
new connection waits in the poller (costing no thread) until it sends something, for at most the
keep-alive timeout; every connection within the limit may be kept alive; and closes linger in
the poller instead of blocking it.

ProxyWorker, the class gunicorn.conf.py names, is that worker owning the proxy's service: it
builds and starts it when Gunicorn loads the app, and stops it when the run loop ends. (The
benchmark's Flask floor runs under ClientLimitWorker alone.)
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import gunicorn
from gunicorn.workers.gthread import TConn, ThreadWorker

from proxy.config import Settings
from proxy.service import Service

TESTED_GUNICORN = (27, 0, 1)
REFUSAL_BODY = b'{"error":"too_many_clients","detail":"the proxy is at MAX_CONNECTIONS"}'
HTTP_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(REFUSAL_BODY), REFUSAL_BODY)
)
LINGER_SECONDS = 2.0  # as Gunicorn's own graceful close: time for the client to hang up
MAX_LINGERING = 1024  # sockets lingering at once; past this, close at once


class Lingerer:
    """Closes sockets without blocking the event loop ("lingering close", RFC 9112 9.6).

    Closing a socket whose receive queue still holds client bytes makes the kernel send RST,
    which can destroy the last answer before the client reads it. So: FIN now, then read and
    discard in the poller until the client hangs up or LINGER_SECONDS pass, then close.
    """

    def __init__(self, poller: selectors.BaseSelector) -> None:
        self.poller = poller
        # socket -> deadline; insertion order is deadline order, as every linger is as long.
        self._lingering: dict[socket.socket, float] = {}

    def close(self, sock: socket.socket) -> None:
        """Half-close now; fully close once the client has read everything."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= MAX_LINGERING:
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + LINGER_SECONDS
        self.poller.register(sock, selectors.EVENT_READ, self._drain)

    def refuse(self, sock: socket.socket, answer: bytes) -> None:
        """Send a short answer (it fits the socket buffer) and close."""
        try:
            sock.setblocking(False)
            sock.send(answer)
        except OSError:
            sock.close()
            return
        self.close(sock)

    def expire(self) -> None:
        """Close the sockets whose client did not hang up in time."""
        now = time.monotonic()
        for sock, deadline in list(self._lingering.items()):
            if deadline > now:
                break
            self._finish(sock)

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._finish(sock)

    def _finish(self, sock: socket.socket) -> None:
        del self._lingering[sock]
        self.poller.unregister(sock)
        sock.close()


class _Conn(TConn):
    """A gthread connection whose graceful close lingers in the poller (see Lingerer)."""

    lingerer: Lingerer

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.lingerer.close(self.sock)
        else:
            super().close()


def _hung_up(sock: socket.socket) -> bool:
    """True if the peer closed an idle non-blocking socket (EOF or error, nothing to read)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class ClientLimitWorker(ThreadWorker):
    """gthread that refuses clients past MAX_CONNECTIONS and never blocks its event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client_limit = self.cfg.worker_connections
        # The stock run loop stops accepting at worker_connections; we count ourselves.
        self.worker_connections = float("inf")
        # Every connection within the limit may stay alive; the limit already bounds them.
        self.max_keepalived = self.client_limit
        self.refused = 0

    @property
    def clients(self) -> int:
        """Connected HTTP clients (for metrics)."""
        return int(self.nr_conns)

    def init_process(self) -> None:
        if gunicorn.version_info != TESTED_GUNICORN:
            self.log.warning(
                "proxy worker was tested with Gunicorn %s, running %s",
                ".".join(map(str, TESTED_GUNICORN)),
                gunicorn.__version__,
            )
        super().init_process()

    def run(self) -> None:
        self.lingerer = Lingerer(self.poller)
        super().run()  # returns after SIGTERM, once in-flight HTTP requests are done

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        if self.nr_conns >= self.client_limit:
            self._reap_departed()
        if self.nr_conns >= self.client_limit:
            self.refused += 1
            self.lingerer.refuse(sock, HTTP_REFUSAL)
            return
        self.nr_conns += 1
        conn = _Conn(self.cfg, sock, address, listener.getsockname())
        conn.lingerer = self.lingerer
        self._park(conn)

    def _park(self, conn: TConn) -> None:
        """Wait for the first bytes in the poller, as gthread does for a deferred connection."""
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def _reap_departed(self) -> None:
        """Stop counting clients that already left, so their slots are free at once.

        Gunicorn notices a hang-up only after a thread round trip, loop iterations later; a
        newcomer arriving meanwhile would be refused a slot nobody holds.
        """
        self.method_queue.run_callbacks(None)  # completed requests: release or keep alive
        for idle in (self.keepalived_conns, self.pending_conns):
            for conn in [conn for conn in idle if _hung_up(conn.sock)]:
                self._drop(conn, idle)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        self._on_idle_readable(conn, self.keepalived_conns, super().on_client_socket_readable)

    def on_pending_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        self._on_idle_readable(conn, self.pending_conns, super().on_pending_socket_readable)

    def _on_idle_readable(
        self, conn: TConn, idle: deque[TConn], serve: Callable[[TConn, socket.socket], None]
    ) -> None:
        if conn.sock.fileno() < 0:
            return  # reaped earlier in this same poll round; this event is stale
        if _hung_up(conn.sock):
            self._drop(conn, idle)  # here, not via a pool thread: the slot is free at once
        else:
            serve(conn, conn.sock)

    def _drop(self, conn: TConn, idle: deque[TConn]) -> None:
        """Forget an idle connection whose client has gone, and close it."""
        idle.remove(conn)
        self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        self.lingerer.expire()


class ProxyWorker(ClientLimitWorker):
    """The proxy's worker: owns the service (proxy/service.py) from build to stop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service: Service | None = None  # built and started by load_wsgi()

    def load_wsgi(self) -> None:
        """Build the service and start it; Gunicorn serves its HTTP app.

        Started here, before Gunicorn counts the worker as booted, so a RESP port that cannot
        be bound stops Gunicorn with a boot error instead of respawning the worker forever.
        """
        settings = Settings.load()
        _send_logs_where_gunicorn_does(settings.log_level)
        self.service = Service.build(settings)
        self.service.start(http=self)
        self.wsgi = self.service.http_app

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.service is not None:
                self.service.stop(self.cfg.graceful_timeout)

    def handle_exit(self, sig: int, frame: object) -> None:
        """SIGTERM: stop accepting on both front ends; in-flight requests still finish."""
        super().handle_exit(sig, frame)
        if self.service is not None:
            self.service.stop_accepting()


def _send_logs_where_gunicorn_does(level: str) -> None:
    """The proxy's loggers use Gunicorn's handlers (format, stream) at LOG_LEVEL."""
    proxy_log = logging.getLogger("proxy")
    proxy_log.setLevel(level.upper())
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers and not proxy_log.handlers:
        for handler in gunicorn_log.handlers:
            proxy_log.addHandler(handler)
        proxy_log.propagate = False
