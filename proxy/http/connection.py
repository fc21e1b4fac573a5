"""An HTTP connection as the worker's event loop holds it, and the socket a pool thread sees.

The loop owns every client socket: it reads requests, writes answers as the socket allows and
closes. A pool thread gets one complete request as bytes (a CapturedSocket that Gunicorn's
parser reads and its response writes into) and never the client's socket, so no thread ever
waits on a client, however slowly it sends or reads.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, cast

from gunicorn.util import write_error

IOV_MAX = 1024  # buffers per sendmsg() call (Linux's UIO_MAXIOV)
READ_SIZE = 65536
TLS_WRITE_SIZE = 256 * 1024  # plaintext bytes per TLS write


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


def gunicorn_error(status: int, reason: str, message: str) -> bytes:
    """An error answer in Gunicorn's own format (its parser's errors look the same)."""
    sink = CapturedSocket(b"")
    write_error(sink, status, reason, message)
    return b"".join(sink.written)
