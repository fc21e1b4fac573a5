"""The connection that holds the proxy's tracking state (CACHE_INVALIDATION=tracking).

proxy/invalidation.py says why there is exactly one per Redis primary, and what it promises.
"""

from __future__ import annotations

import time
from enum import Enum

import redis
from redis.connection import ConnectionInterface
from redis.exceptions import ConnectionError, TimeoutError

from proxy.redis_errors import redis_errors_as_typed


class Quiet(Enum):
    """InvalidationLink.receive() heard no invalidation within the wait."""

    NOTHING = 0


NOTHING = Quiet.NOTHING
INVALIDATION_CHANNEL = b"__redis__:invalidate"
IDLE_PING_SECONDS = 1.0


class InvalidationLink:
    """The one connection that holds the proxy's tracking state and hears its invalidations.

    It turns on `CLIENT TRACKING ... BCAST` redirected to itself, then subscribes to
    `__redis__:invalidate` (RESP2 pub/sub, Redis 6 and later): Redis then reports every key
    that changes, to this connection, for as long as this connection lives. It PINGs when
    idle, so a Redis that vanished without closing the socket is noticed within
    IDLE_PING_SECONDS + REDIS_TIMEOUT.
    """

    def __init__(self, pool: redis.ConnectionPool, timeout: float) -> None:
        self.timeout = timeout
        self._pool = pool
        self._connection: ConnectionInterface | None = None
        self._last_heard = 0.0
        self._ping_sent: float | None = None

    def open(self) -> int:
        """Connect and subscribe; returns this connection's client id."""
        with redis_errors_as_typed(self.timeout):
            connection = self._pool.make_connection()
            connection.connect()
            connection.send_command("CLIENT", "ID")
            client_id = int(connection.read_response())
            connection.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST")
            if connection.read_response() != b"OK":
                raise ConnectionError("CLIENT TRACKING was not enabled")
            connection.send_command("SUBSCRIBE", INVALIDATION_CHANNEL)
            connection.read_response()
        self._connection, self._last_heard = connection, time.monotonic()
        return client_id

    def receive(self, wait: float) -> list[bytes] | Quiet | None:
        """The next invalidation within `wait` seconds: changed keys, None for "everything"
        (FLUSHALL, FLUSHDB), or NOTHING. Raises the typed error when the link is gone."""
        assert self._connection is not None
        now = time.monotonic()
        with redis_errors_as_typed(self.timeout):
            if self._connection.can_read(timeout=wait):
                message = self._connection.read_response()
                self._last_heard, self._ping_sent = time.monotonic(), None
                return message[2] if message[0] == b"message" else NOTHING  # or a pong
            if self._ping_sent is not None and now - self._ping_sent > self.timeout:
                raise TimeoutError("the invalidation connection stopped answering PING")
            if self._ping_sent is None and now - self._last_heard > IDLE_PING_SECONDS:
                self._connection.send_command("PING")
                self._ping_sent = now
        return NOTHING

    def close(self) -> None:
        self._pool.disconnect()
