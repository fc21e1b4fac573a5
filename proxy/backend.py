"""The backing Redis: the only module that touches redis-py and its exceptions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from enum import Enum
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionInterface, SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from proxy.errors import (
    BackendError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    WrongType,
)
from proxy.logs import RateLimitedLog
from proxy.reads import Answer

log = logging.getLogger(__name__)
# Keys per MGET the proxy sends Redis: a larger read of misses goes in chunks this long, each
# in one round trip, so one client's MGET holds Redis (and one reply's memory) only so long.
MAX_BATCH_KEYS = 1000
# Every key's PTTL in one command: what the proxy needs beside MGET's values, so that no entry
# outlives the key in Redis, without a command per key.
PTTLS = "local t = {} for i, k in ipairs(KEYS) do t[i] = redis.call('PTTL', k) end return t"
PROBE_WAIT = 0.5  # seconds a metrics scrape waits for Redis's PING (proxy_backend_up)


@contextmanager
def redis_errors_as_typed(timeout: float) -> Iterator[None]:
    """Turn redis-py's exceptions raised inside the block into the proxy's typed errors."""
    try:
        yield
    except TimeoutError as exc:
        raise BackendTimeout(f"Redis did not answer within {timeout:g} s") from exc
    except AuthenticationError as exc:
        raise BackendUnavailable("Redis rejected the proxy's credentials") from exc
    except ConnectionError as exc:
        raise BackendUnavailable("cannot reach Redis") from exc
    except ResponseError as exc:
        code = error_code(exc)
        if code == "WRONGTYPE":
            raise WrongType("the key holds a non-string value; only strings can be read") from exc
        raise BackendRejected(f"Redis refused the command ({code})") from exc


def _fetched(value: bytes | None, pttl: int) -> Answer:
    """One key of a batch: (value, seconds left), or WrongType when MGET's nil is a key of
    another type (its PTTL says it exists)."""
    if value is None and pttl != -2:
        return WrongType("the key holds a non-string value; only strings can be read")
    return value, _seconds_left(value, pttl)


def _seconds_left(value: bytes | None, pttl: int) -> float | None:
    """A read key's time to live from its PTTL (None: no expiry, or no value). -2 after a
    value was read means the key expired between the two commands: no time left, so the
    value is not to be cached."""
    return None if value is None or pttl == -1 else max(pttl, 0) / 1000


def error_code(exc: ResponseError) -> str:
    """The code Redis put first in its error line (ERR, WRONGTYPE, NOPERM, OOM...): redis-py
    strips the codes it has a class for and keeps them as `status_code`."""
    code = getattr(exc, "status_code", None)
    return str(code) if code else (str(exc).split(" ", 1)[0] or "ERR")


class Backend:
    """One backing Redis, read with GET; failures become the proxy's typed errors. Its pooled
    connections carry no tracking state (proxy/invalidation.py says why).

    With `sentinels`, the Redis is whichever the Sentinels name master of `master`, through
    redis-py's own Sentinel client (a new connection asks them; REDIS_URL then gives the
    database, credentials and TLS, not the address).
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        sentinels: tuple[tuple[str, int], ...] = (),
        master: str = "",
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.master_name = master
        waits = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self._sentinel = Sentinel(list(sentinels), sentinel_kwargs=waits) if sentinels else None
        # One immediate retry on a connection error replaces a pooled socket that went stale
        # when Redis restarted (or a master was replaced); timeouts are not retried, so a slow
        # Redis costs one REDIS_TIMEOUT, and there is no backoff loop (redis-py's default is
        # 10 tries).
        retry = Retry(NoBackoff(), 1, supported_errors=(ConnectionError,))
        self._client = redis.Redis(connection_pool=self.pool("redis-cache-proxy", retry=retry))
        self._pttl_script: str | None = None  # the PTTLS script's SHA, once loaded
        self._scripts_refused = False  # by an ACL, or disabled: PTTL by PTTL
        self._warnings = RateLimitedLog(log)
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="redis-probe")
        self._probe: Future[None] | None = None
        self._probe_lock = threading.Lock()

    def pool(self, client_name: str, **options: object) -> redis.ConnectionPool:
        """A pool of connections to the backing Redis (the master, with Sentinel), named
        `client_name` in its CLIENT LIST."""
        # RESP2 works with every Redis version; HELLO (RESP3) needs Redis >= 6.
        options.update(protocol=2, client_name=client_name)
        options.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        if self._sentinel is None:
            return redis.ConnectionPool.from_url(self.url, **options)
        from_url = parse_url(self.url)
        tls = from_url.pop("connection_class", None) is SSLConnection
        for address in ("host", "port"):
            from_url.pop(address, None)
        return SentinelConnectionPool(
            self.master_name, self._sentinel, ssl=tls, **from_url, **options
        )

    def invalidation_link(self) -> InvalidationLink:
        """A new, unopened link to the master for CACHE_INVALIDATION=tracking."""
        return InvalidationLink(self.pool("redis-cache-proxy-invalidation"), self.timeout)

    def master(self) -> tuple[str, int] | None:
        """Where the Sentinels say the master is now (None without Sentinel, or when they
        name none or do not answer)."""
        if self._sentinel is None:
            return None
        try:
            return cast(tuple[str, int], self._sentinel.discover_master(self.master_name))
        except (MasterNotFoundError, ConnectionError, TimeoutError):
            return None

    def drop_connections(self) -> None:
        """Close every pooled connection, in use or not: the master changed, and a connection
        to the old one must not serve another read."""
        self._client.connection_pool.disconnect(inuse_connections=True)

    def get(self, key: bytes) -> tuple[bytes | None, float | None]:
        """The value stored under `key` (None when Redis has no such key) and, if Redis will
        expire it, the seconds it has left: GET and PTTL pipelined, one round trip."""
        with self._reading():
            pipe = self._client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = pipe.execute(raise_on_error=False)
            if isinstance(value, ResponseError):
                raise value  # as GET alone raises it (WRONGTYPE...), not wrapped
        # bytes, as decode_responses is off
        return cast(bytes | None, value), _seconds_left(value, pttl)

    def get_many(self, keys: Sequence[bytes]) -> list[Answer]:
        """Each key's value and seconds to live, for at most MAX_BATCH_KEYS keys, in one round
        trip: one MGET and every key's PTTL (one script call where Redis runs scripts, else
        a PTTL per key, pipelined). A key of another type is WRONGTYPE in its place."""
        with self._reading():
            values, pttls = self._mget_with_pttls(keys)
        return [_fetched(value, pttl) for value, pttl in zip(values, pttls, strict=True)]

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Redis's errors as the proxy's typed ones, each kind warned about at most once per
        interval, but WRONGTYPE: the client's mistake, not the backend's."""
        try:
            with redis_errors_as_typed(self.timeout):
                yield
        except BackendError as exc:
            if not isinstance(exc, WrongType):
                self._warnings.warn("backend %s: %s", exc.kind, exc, kind=exc.kind)
            raise

    def _mget_with_pttls(self, keys: Sequence[bytes]) -> tuple[list[Any], list[int]]:
        script = self._pttls_script()
        if script is not None:
            pipe = self._client.pipeline(transaction=False)
            pipe.mget(keys)
            pipe.evalsha(script, len(keys), *keys)
            values, pttls = pipe.execute(raise_on_error=False)
            if isinstance(values, ResponseError):
                raise values  # the MGET itself refused (an ACL on the keys, say)
            if not isinstance(pttls, ResponseError):
                return values, pttls
            # NOSCRIPT (a restarted or new master): load it again next time; anything else
            # (scripts refused by an ACL): PTTL by PTTL from now on.
            self._pttl_script = None
            self._scripts_refused = error_code(pttls) != "NOSCRIPT"
        pipe = self._client.pipeline(transaction=False)
        pipe.mget(keys)
        for key in keys:
            pipe.pttl(key)
        values, *pttls = pipe.execute()
        return values, pttls

    def _pttls_script(self) -> str | None:
        """The PTTLS script's SHA, loaded on first use; None where Redis refuses scripts."""
        if self._pttl_script is None and not self._scripts_refused:
            try:
                self._pttl_script = self._client.script_load(PTTLS)
            except ResponseError:
                self._scripts_refused = True
        return self._pttl_script

    def ping(self) -> None:
        """Raise the typed error if Redis does not answer PING within REDIS_TIMEOUT."""
        with redis_errors_as_typed(self.timeout):
            self._client.ping()

    def answers(self) -> bool:
        """Did Redis answer a PING within PROBE_WAIT (a metrics scrape asks)? The PING runs on
        its own thread, one at a time, so a stalled Redis holds no scrape for REDIS_TIMEOUT."""
        with self._probe_lock:
            if self._probe is None or self._probe.done():
                self._probe = self._prober.submit(self.ping)
            probe = self._probe
        try:
            probe.result(timeout=min(PROBE_WAIT, self.timeout))
        except (BackendError, FutureTimeout):
            return False
        return True

    def close(self) -> None:
        """Drop every pooled connection."""
        self._prober.shutdown(wait=False)
        self._client.close()


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
