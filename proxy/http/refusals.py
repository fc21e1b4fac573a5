"""How the HTTP loop refuses and closes connections without blocking: its own short answers
(past MAX_CONNECTIONS, protected mode, a request not sent in time), the spare descriptor that
lets it refuse a client even when out of them, and the lingering close.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import time

from proxy.access import PROTECTED_MODE_MESSAGE

LINGER_SECONDS = 2.0  # as Gunicorn's own graceful close: time for the client to hang up
# The loop's own answers: past MAX_CONNECTIONS, a client from another host in protected mode,
# and a request that did not arrive in time.
REFUSAL_BODY = b'{"error":"too_many_clients","detail":"the proxy is at MAX_CONNECTIONS"}'
HTTP_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(REFUSAL_BODY), REFUSAL_BODY)
)
DENIED_BODY = json.dumps({"error": "protected_mode", "detail": PROTECTED_MODE_MESSAGE}).encode()
HTTP_DENIED = (
    b"HTTP/1.1 403 Forbidden\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(DENIED_BODY), DENIED_BODY)
)
TIMEOUT_BODY = b'{"error":"request_timeout","detail":"the request did not arrive in time"}'
HTTP_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(TIMEOUT_BODY), TIMEOUT_BODY)
)


class Spare:
    """A descriptor held back, so that a client can still be refused with an answer when the
    process has no other to give it (the "EMFILE trick" of libuv and nginx)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._take()

    def _take(self) -> None:
        try:
            self._fd = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._fd = None  # taken again at the next refusal

    def refuse(self, listener: socket.socket, answer: bytes) -> int:
        """Free the spare, accept one waiting client, answer it and close it, take the spare
        back. Returns how many clients were refused (0 or 1)."""
        if self._fd is not None:
            os.close(self._fd)
        try:
            sock, _ = listener.accept()
        except OSError:
            self._take()
            return 0
        with sock:
            try:
                sock.setblocking(False)
                sock.send(answer)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._take()
        return 1


class Lingerer:
    """Closes sockets without blocking the event loop ("lingering close", RFC 9112 9.6).

    Closing a socket whose receive queue still holds client bytes makes the kernel send RST,
    which can destroy the last answer before the client reads it. So: FIN now, then read and
    discard in the poller until the client hangs up or LINGER_SECONDS pass, then close.
    """

    def __init__(self, poller: selectors.BaseSelector, limit: int) -> None:
        self.poller = poller
        self.limit = limit  # sockets lingering at once (MAX_CONNECTIONS); past it, close at once
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
        if len(self._lingering) >= self.limit:
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


def hung_up(sock: socket.socket) -> bool:
    """True if the peer closed an idle non-blocking socket (EOF or error, nothing to read)."""
    try:  # the raw socket's recv: TLS's own does not peek
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
