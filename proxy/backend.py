"""The backing Redis: the only module that touches redis-py and its exceptions."""

from __future__ import annotations

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
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    WrongType,
)


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

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None when Redis has no such key."""
        try:
            return self._client.get(key)
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
            raise BackendRejected(f"Redis refused the read ({code})") from exc

    def close(self) -> None:
        """Drop every pooled connection."""
        self._client.close()
