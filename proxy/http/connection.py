"""An HTTP connection as the worker's event loop holds it, and the socket a pool thread sees.

The loop owns every client socket: it reads requests, writes answers as the socket allows and
closes. A pool thread gets one complete request as bytes (a CapturedSocket that Gunicorn's
parser reads and its response writes into) and never the client's socket, so no thread ever
waits on a client, however slowly it sends or reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, cast

from gunicorn.util import write_error

from proxy.access import PROTECTED_MODE_MESSAGE

LINGER_SECONDS = 2.0  # as Gunicorn's own graceful close: time for the client to hang up
IOV_MAX = 1024  # buffers per sendmsg() call (Linux's UIO_MAXIOV)
READ_SIZE = 65536
TLS_WRITE_SIZE = 256 * 1024  # plaintext bytes per TLS write
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


class Client:
    """One HTTP connection: bytes read and not yet answered, answers not yet written."""

    __slots__ = (
        "address",
        "busy",
        "closing",
        "events",
        "handshaking",
        "inbuf",
        "marks",
        "out",
        "sent",
        "server",
        "sock",
        "timer",
    )

    def __init__(self, sock: socket.socket, address: Any, server: Any) -> None:
        self.sock = sock
        self.address = address
        self.server = server
        self.inbuf: bytes | bytearray = b""  # read, not yet a whole request or not yet answered
        self.out: list[bytes | memoryview] = []  # answers, in order, not yet written
        self.busy = False  # a request of this connection is on a pool thread
        self.closing = False  # close once `out` is written
        self.events = 0  # what the poller watches this socket for
        self.timer: Deadlines | None = None  # the deadline this connection is under, if any
        self.sent = 0  # bytes written to the socket so far
        self.handshaking = False  # TLS: the handshake is not done yet
        # (bytes sent when an answer is out, what to call then): its access lines
        self.marks: deque[tuple[int, list[Callable[[float], None]]]] = deque()

    def received(self, data: bytes) -> None:
        """Append bytes read from the socket (a bytearray only when they pile up)."""
        if not self.inbuf:
            self.inbuf = data
        elif isinstance(self.inbuf, bytearray):
            self.inbuf += data
        else:
            self.inbuf = bytearray(self.inbuf) + data

    def queue(self, buffers: list[bytes], when_sent: list[Callable[[float], None]]) -> None:
        """Queue an answer; `when_sent` are called with the time its last byte is written."""
        self.out += buffers
        if when_sent:
            self.marks.append((self.sent + sum(map(len, self.out)), when_sent))

    def finish_sent(self, everything: bool = False) -> None:
        """Call what waits on answers written out (all of them if the connection is closing:
        their time is the close)."""
        now = time.perf_counter()
        while self.marks and (everything or self.sent >= self.marks[0][0]):
            for call in self.marks.popleft()[1]:
                call(now)

    def read(self) -> bytes | None:
        """What the client sent, b"" if it has gone or sends no more, None if nothing yet."""
        try:
            return self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def flush(self) -> bool:
        """Write what the socket takes now; False if the client has gone."""
        out = self.out
        while out:
            try:
                sent = self._send(out)
            except BlockingIOError:
                break
            except OSError:
                return False
            self.sent += sent
            while sent:
                size = len(out[0])
                if sent < size:
                    out[0] = memoryview(out[0])[sent:]
                    break
                sent -= size
                del out[0]
        if self.marks:
            self.finish_sent()
        return True

    def _send(self, out: list[bytes | memoryview]) -> int:
        return self.sock.sendmsg(out[:IOV_MAX])

    def end(self) -> None:
        """Before a graceful close (TLS: say so to the client)."""


class TlsClient(Client):
    """A connection whose socket speaks TLS (TLS_CERT_FILE): the loop drives the handshake
    without blocking, then reads and writes plaintext through the TLS layer."""

    def __init__(self, sock: socket.socket, address: Any, server: Any) -> None:
        super().__init__(sock, address, server)
        self.handshaking = True

    def read(self) -> bytes | None:
        sock = cast(ssl.SSLSocket, self.sock)
        try:
            if self.handshaking:
                sock.do_handshake()
                self.handshaking = False
            data = sock.recv(READ_SIZE)
            while data and sock.pending():  # decrypted already: the poller will not say so
                data += sock.recv(READ_SIZE)
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return None
        except OSError:  # a failed handshake (a plaintext client, no certificate) included
            return b""

    def _send(self, out: list[bytes | memoryview]) -> int:
        # TLS has no sendmsg; after a partial write the same bytes must be offered again,
        # which a fixed-size slice of the unchanged first buffer is.
        try:
            return self.sock.send(out[0][:TLS_WRITE_SIZE])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError) as exc:
            raise BlockingIOError from exc

    def end(self) -> None:
        """Send TLS's close_notify (without waiting for the client's)."""
        with contextlib.suppress(OSError, ValueError):
            cast(ssl.SSLSocket, self.sock).unwrap()


class Deadlines:
    """Connections under one kind of deadline, in deadline order (all get the same timeout)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[Client, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._due))

    def start(self, client: Client, now: float) -> None:
        """Put `client` under this deadline from `now` (moving it from any other)."""
        if client.timer is not None:
            client.timer.discard(client)
        self._due[client] = now + self.seconds
        client.timer = self

    def discard(self, client: Client) -> None:
        self._due.pop(client, None)
        client.timer = None

    def expired(self, now: float) -> list[Client]:
        """The connections whose deadline has passed, earliest first."""
        due = []
        for client, deadline in self._due.items():
            if deadline > now:
                break
            due.append(client)
        return due

    def cap(self, deadline: float) -> None:
        """No deadline later than `deadline` (the order stays: every one is capped alike)."""
        for client, due in self._due.items():
            self._due[client] = min(due, deadline)


class CapturedSocket:
    """The socket a pool thread hands Gunicorn: it reads one request the loop already read and
    collects what Gunicorn writes, for the loop to send as the client's socket allows."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._read = 0
        self.written: list[bytes] = []
        self.shut = False  # Gunicorn closed it: the connection must not be reused

    @property
    def unread(self) -> int:
        return len(self._data) - self._read

    def recv(self, size: int) -> bytes:
        chunk = self._data[self._read : self._read + size]
        self._read += len(chunk)
        return chunk

    def sendall(self, data: bytes) -> None:
        self.written.append(data)

    def send(self, data: bytes) -> int:
        self.written.append(data)
        return len(data)

    def shutdown(self, how: int) -> None:
        self.shut = True

    def close(self) -> None:
        self.shut = True

    def setblocking(self, flag: bool) -> None:
        """Nothing to change: reads and writes never wait."""

    def settimeout(self, timeout: float | None) -> None:
        """Nothing to change: reads and writes never wait."""

    def gettimeout(self) -> float:
        return 0.0


def hung_up(sock: socket.socket) -> bool:
    """True if the peer closed an idle non-blocking socket (EOF or error, nothing to read)."""
    try:  # the raw socket's recv: TLS's own does not peek
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def gunicorn_error(status: int, reason: str, message: str) -> bytes:
    """An error answer in Gunicorn's own format (its parser's errors look the same)."""
    sink = CapturedSocket(b"")
    write_error(sink, status, reason, message)
    return b"".join(sink.written)
