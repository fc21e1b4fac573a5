"""The backing Redis: the only module that touches redis-py and its exceptions."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry

from proxy.errors import (
    BackendError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    WrongType,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
WARN_INTERVAL_SECONDS = 10.0


class Backend:
    """One backing Redis, read with GET; failures become the proxy's typed errors."""

    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry on a connection error replaces a pooled socket that went
            # stale when Redis restarted; timeouts are not retried, so a slow Redis costs
            # one REDIS_TIMEOUT, and there is no backoff loop (redis-py's default is 10 tries).
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            # RESP2 works with every Redis version; HELLO (RESP3) needs Redis >= 6.
            protocol=2,
            client_name="redis-cache-proxy",
        )
        self._warnings = _Warnings()

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None when Redis has no such key."""
        try:
            return self._call(self._client.get, key)
        except BackendError as exc:
            self._warnings.warn(exc)
            raise

    def ping(self) -> None:
        """Raise the typed error if Redis does not answer PING within REDIS_TIMEOUT."""
        self._call(self._client.ping)

    def _call(self, command: Callable[..., T], *args: bytes) -> T:
        try:
            return command(*args)
        except TimeoutError as exc:
            raise BackendTimeout(f"Redis did not answer within {self.timeout:g} s") from exc
        except AuthenticationError as exc:
            raise BackendUnavailable("Redis rejected the proxy's credentials") from exc
        except ConnectionError as exc:
            raise BackendUnavailable("cannot reach Redis") from exc
        except ResponseError as exc:
            code = str(exc).split(" ", 1)[0]
            if code == "WRONGTYPE":
                raise WrongType(
                    "the key holds a non-string value; only strings can be read"
                ) from exc
            raise BackendRejected(f"Redis refused the command ({code})") from exc


class _Warnings:
    """Logs backend errors, at most one line per kind per interval, counting the rest."""

    def __init__(self, interval: float = WARN_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warn(self, error: BackendError) -> None:
        if isinstance(error, WrongType):
            return  # the client's mistake, not the backend's
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(error.kind, -self.interval) < self.interval:
                self._suppressed[error.kind] += 1
                return
            self._last[error.kind] = now
            suppressed, self._suppressed[error.kind] = self._suppressed[error.kind], 0
        log.warning(
            "backend %s: %s (%d more like it in the last %g s not logged)",
            error.kind,
            error,
            suppressed,
            self.interval,
        )

    def close(self) -> None:
        """Drop every pooled connection."""
        self._client.close()
