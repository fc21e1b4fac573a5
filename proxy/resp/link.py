"""A RESP client's end of the wire, as its Connection uses it: writes, reading on and off,
the loop's next turn, and every way the connection ends.

The Connection (proxy/resp/connection.py) decides what to answer and when; the Link keeps the
rules that protect everyone else from this one client: replies it does not read are bounded,
large values are written by reference rather than copied, and a connection closes without
the kernel resetting it under replies still unread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from proxy.resp import codec as wire

log = logging.getLogger(__name__)

# Replies waiting for a client to read them, past which it is disconnected (Redis's
# client-output-buffer-limit). Large values are queued by reference, so this bounds what a
# client can ask for (an MGET of a large value many times), not a copy per reply.
MAX_PENDING_OUTPUT = 512 * 1024 * 1024
LINGER_SECONDS = 1.0  # after a last error reply (see linger_after)


def linger_after(transport: asyncio.Transport, error: bytes) -> None:
    """Write a last error reply, FIN, then let what the client still sends be read and dropped
    until it hangs up or LINGER_SECONDS pass: closing with its bytes unread would make the
    kernel reset the connection, which can destroy the replies before they are read."""
    transport.write(error)
    if not transport.can_write_eof():  # TLS: no half-close; close() sends what is queued
        transport.close()
        return
    transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


class Link:
    """One client's transport, with the proxy's limits on it."""

    def __init__(self, transport: asyncio.Transport, dropped: Counter[str]) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.dropped = dropped  # clients the proxy disconnected, by reason (metrics)
        self.reading = True
        self.closed = False
        self._scheduled = False

    def send(self, pieces: wire.Pieces) -> None:
        """Write replies in order (large values by reference); a client that lets more than
        MAX_PENDING_OUTPUT wait unread is disconnected, as Redis does. (One buffer is never
        large: large values come as several, and small replies stop being made once the
        transport asks the connection to pause.)"""
        if self.closed:
            return
        if len(pieces) == 1:
            self.transport.write(pieces[0])
            return
        self.transport.writelines(pieces)
        if self.transport.get_write_buffer_size() > MAX_PENDING_OUTPUT:
            self.drop("output_limit")

    def send_value(self, value: bytes) -> None:
        """One GET's reply: send(bulk_pieces(value)), without building a list for a small one."""
        if len(value) < wire.LARGE_VALUE and not self.closed:
            self.transport.write(wire.bulk(value))
        else:
            self.send(wire.bulk_pieces(value))

    def pause_reading(self) -> None:
        if self.reading and not self.closed:
            self.reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not (self.reading or self.closed):
            self.reading = True
            self.transport.resume_reading()

    def next_turn(self, work: Callable[[], None]) -> None:
        """Carry on with `work` in the loop's next turn, after other clients' events."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._resume, work)

    def _resume(self, work: Callable[[], None]) -> None:
        self._scheduled = False
        if not self.closed:
            work()

    def drop(self, reason: str) -> None:
        """Disconnect the client at once (a limit or a timeout), counted by `reason`."""
        if not self.closed:
            self.dropped[reason] += 1
            self.closed = True
            self.transport.abort()

    def close(self, last: bytes = b"") -> None:
        """Write `last` (if any) after everything else, then close."""
        self.closed = True
        if last:
            self.transport.write(last)
        self.transport.close()

    def close_after_error(self, error: bytes) -> None:
        """The protocol error, then a lingering close (see linger_after)."""
        self.resume_reading()
        self.closed = True
        linger_after(self.transport, error)

    def cut(self, name: str, unanswered: int) -> None:
        """Close now (the worker is stopping), saying what is lost if anything is."""
        unsent = self.transport.get_write_buffer_size()
        if unsent or unanswered:
            log.warning(
                "RESP connection %s cut at GRACEFUL_TIMEOUT: %d bytes of replies not sent, "
                "%d requests not answered",
                name,
                unsent,
                unanswered,
            )
        self.closed = True
        if unsent:
            self.transport.abort()  # close() would wait for the client to read it all
        else:
            self.transport.close()
