"""The backing Redis: with proxy/link.py, the only modules that use redis-py; its errors
become the proxy's typed ones through proxy/redis_errors.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import (
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from proxy.errors import BackendError, WrongType
from proxy.logs import RateLimitedLog
from proxy.reads import Answer
from proxy.redis_errors import error_code, redis_errors_as_typed, typed, wrong_type

log = logging.getLogger(__name__)
# Keys per MGET the proxy sends Redis: a larger read of misses goes in chunks this long, each
# in one round trip, so one client's MGET holds Redis (and one reply's memory) only so long.
MAX_BATCH_KEYS = 1000
# Every key's PTTL in one command: what the proxy needs beside MGET's values, so that no entry
# outlives the key in Redis, without a command per key.
PTTLS = "local t = {} for i, k in ipairs(KEYS) do t[i] = redis.call('PTTL', k) end return t"
CLIENT_NAME = "redis-cache-proxy"  # the read connections' name in CLIENT LIST
PROBE_WAIT = 0.5  # seconds a metrics scrape waits for Redis's PING (proxy_backend_up)


def _fetched(value: bytes | None, pttl: int) -> Answer:
    """One key of a batch: (value, seconds left), or WrongType when MGET's nil is a key of
    another type (its PTTL says it exists)."""
    if value is None and pttl != -2:
        return wrong_type()
    return value, _seconds_left(value, pttl)


def _first_answer(nodes: Sequence[ClusterNode], command: str) -> Any:
    """The reply of the first of `nodes` to answer `command`, each asked on its own
    connection (not through the cluster client, which would refresh its whole slot map on
    each node that is down); the last failure if none answers."""
    failure: RedisError = ConnectionError("the cluster has no node to ask")
    for node in nodes:
        try:
            return node.redis_connection.execute_command(command)
        except RedisError as exc:
            failure = exc
    raise failure


def _text(host: bytes | str) -> str:
    return host.decode() if isinstance(host, bytes) else host


def _seconds_left(value: bytes | None, pttl: int) -> float | None:
    """A read key's time to live from its PTTL (None: no expiry, or no value). -2 after a
    value was read means the key expired between the two commands: no time left, so the
    value is not to be cached."""
    return None if value is None or pttl == -1 else max(pttl, 0) / 1000


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
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.master_name = master
        self.cluster = cluster
        waits = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self._sentinel = Sentinel(list(sentinels), sentinel_kwargs=waits) if sentinels else None
        # One immediate retry on a connection error replaces a pooled socket that went stale
        # when Redis restarted (or a master was replaced); timeouts are not retried, so a slow
        # Redis costs one REDIS_TIMEOUT, and there is no backoff loop (redis-py's default is
        # 10 tries). On a cluster, redis-py refreshes its slot map before that retry.
        retry = Retry(NoBackoff(), 1, supported_errors=(ConnectionError,))
        self._retry = retry
        self._client: redis.Redis | RedisCluster | None = None  # a cluster's: see _reader()
        self._client_lock = threading.Lock()
        if not cluster:
            self._client = redis.Redis(connection_pool=self.pool(CLIENT_NAME, retry=retry))
        self._pttl_script: str | None = None  # the PTTLS script's SHA, once loaded
        self._scripts_refused = False  # by an ACL, or disabled: PTTL by PTTL
        self._warnings = RateLimitedLog(log)
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="redis-probe")
        self._probe: Future[None] | None = None
        self._probe_lock = threading.Lock()

    def _reader(self) -> redis.Redis | RedisCluster:
        """The client reads go through. A cluster's is made on first use, and on every use
        until a node answers (redis-py's asks one for the slot map when made), so that the
        proxy starts while the cluster is down, as it does while a single server is."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    options = self._options(CLIENT_NAME)
                    self._client = RedisCluster.from_url(self.url, retry=self._retry, **options)
                client = self._client
        return client

    def _options(self, client_name: str, **options: object) -> dict[str, Any]:
        # RESP2 works with every Redis version; HELLO (RESP3) needs Redis >= 6.
        options.update(protocol=2, client_name=client_name)
        options.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        return options

    def pool(
        self, client_name: str, node: tuple[str, int] | None = None, **options: object
    ) -> redis.ConnectionPool:
        """A pool of connections to the backing Redis (the master, with Sentinel; `node` of
        a cluster), named `client_name` in its CLIENT LIST."""
        settings = self._options(client_name, **options)
        if self._sentinel is None and node is None:
            return redis.ConnectionPool.from_url(self.url, **settings)
        from_url = parse_url(self.url)
        if node is not None:  # the URL's credentials and TLS, the node's address
            from_url.update(settings, host=node[0], port=node[1])
            return redis.ConnectionPool(**from_url)
        tls = from_url.pop("connection_class", None) is SSLConnection
        for address in ("host", "port"):
            from_url.pop(address, None)
        assert self._sentinel is not None
        return SentinelConnectionPool(
            self.master_name, self._sentinel, ssl=tls, **from_url, **settings
        )

    def primaries(self) -> frozenset[tuple[str, int]] | None:
        """The cluster's primaries, as the first node redis-py knows that answers CLUSTER
        SLOTS names them (None when none answers, or without a cluster)."""
        if not self.cluster:
            return None
        try:
            client = self._reader()
            assert isinstance(client, RedisCluster)
            ranges = _first_answer(client.get_nodes(), "CLUSTER SLOTS")
        except (RedisError, RedisClusterException):
            return None
        # [first slot, last slot, [primary host, port, id, ...], replicas...] per range
        return frozenset((_text(r[2][0]), int(r[2][1])) for r in ranges)

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
        assert isinstance(self._client, redis.Redis)  # (Sentinel: never a cluster)
        self._client.connection_pool.disconnect(inuse_connections=True)

    def get(self, key: bytes) -> tuple[bytes | None, float | None]:
        """The value stored under `key` (None when Redis has no such key) and, if Redis will
        expire it, the seconds it has left: GET and PTTL pipelined, one round trip."""
        with self._reading():
            pipe = self._reader().pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = pipe.execute(raise_on_error=False)
            if isinstance(value, ResponseError):
                raise value  # as GET alone raises it (WRONGTYPE...), not wrapped
        # bytes, as decode_responses is off
        return cast(bytes | None, value), _seconds_left(value, pttl)

    def get_many(self, keys: Sequence[bytes]) -> list[Answer]:
        """Each key's value and seconds to live, for at most MAX_BATCH_KEYS keys, in one round
        trip (one per node on a cluster): one MGET and every key's PTTL (one script call where
        Redis runs scripts, else a PTTL per key, pipelined). A key of another type is
        WrongType in its place; on a cluster, a key whose node failed has that error."""
        with self._reading():
            values, pttls = self._values_and_pttls(keys)
        pairs = zip(values, pttls, strict=True)
        if not self.cluster:
            return [_fetched(value, pttl) for value, pttl in pairs]
        return [self._fetched_from_node(value, pttl) for value, pttl in pairs]

    def _fetched_from_node(self, value: bytes | Exception | None, pttl: int | Exception) -> Answer:
        """As _fetched, or the error of the key's node, which is warned about as a failed
        round trip is."""
        if isinstance(value, Exception) or isinstance(pttl, Exception):
            error = typed(
                value if isinstance(value, Exception) else cast(Exception, pttl), self.timeout
            )
            self._warn(error)
            return error
        return _fetched(value, pttl)

    def _values_and_pttls(self, keys: Sequence[bytes]) -> tuple[list[Any], list[Any]]:
        if not self.cluster:
            return self._mget_with_pttls(keys)
        # A GET and a PTTL per key: redis-py sends each node its keys' commands in one write,
        # follows MOVED and ASK, and leaves a failed node's error in its keys' places.
        pipe = self._reader().pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute(raise_on_error=False)
        return replies[0::2], replies[1::2]

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Redis's errors as the proxy's typed ones, warned about (_warn)."""
        try:
            with redis_errors_as_typed(self.timeout):
                yield
        except BackendError as exc:
            self._warn(exc)
            raise

    def _warn(self, error: BackendError) -> None:
        """Warn of a failed read, each kind at most once per interval, but of WRONGTYPE: the
        client's mistake, not the backend's."""
        if not isinstance(error, WrongType):
            self._warnings.warn("backend %s: %s", error.kind, error, kind=error.kind)

    def _mget_with_pttls(self, keys: Sequence[bytes]) -> tuple[list[Any], list[int]]:
        script = self._pttls_script()
        if script is not None:
            pipe = self._reader().pipeline(transaction=False)
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
        pipe = self._reader().pipeline(transaction=False)
        pipe.mget(keys)
        for key in keys:
            pipe.pttl(key)
        values, *pttls = pipe.execute()
        return values, pttls

    def _pttls_script(self) -> str | None:
        """The PTTLS script's SHA, loaded on first use; None where Redis refuses scripts."""
        if self._pttl_script is None and not self._scripts_refused:
            try:
                self._pttl_script = self._reader().script_load(PTTLS)
            except ResponseError:
                self._scripts_refused = True
        return self._pttl_script

    def ping(self) -> None:
        """Raise the typed error if Redis does not answer PING within REDIS_TIMEOUT (on a
        cluster: if no primary does; one that is down fails only its own slots' reads)."""
        with redis_errors_as_typed(self.timeout):
            client = self._reader()
            if not isinstance(client, RedisCluster):
                client.ping()
                return
            _first_answer(client.get_primaries(), "PING")

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
        if self._client is not None:
            self._client.close()
