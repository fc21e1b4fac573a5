"""redis-py's exceptions as the proxy's typed errors (proxy/errors.py): the one table.

proxy/backend.py and proxy/link.py read Redis inside `redis_errors_as_typed`; the front ends
then map the typed errors to their answers, each in a table of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
)

from proxy.errors import (
    BackendError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    WrongType,
)


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
    except (ClusterDownError, ClusterError, RedisClusterException) as exc:
        # (before ResponseError: CLUSTERDOWN is one) no node serves the key's slot now
        raise BackendUnavailable(f"the cluster cannot answer ({exc})") from exc
    except ResponseError as exc:
        code = error_code(exc)
        if code == "WRONGTYPE":
            raise wrong_type() from exc
        raise BackendRejected(f"Redis refused the command ({code})") from exc


def typed(exc: Exception, timeout: float) -> BackendError:
    """The proxy's typed error for one of redis-py's, as redis_errors_as_typed raises it."""
    try:
        with redis_errors_as_typed(timeout):
            raise exc
    except BackendError as error:
        return error


def error_code(exc: ResponseError) -> str:
    """The code Redis put first in its error line (ERR, WRONGTYPE, NOPERM, OOM...): redis-py
    strips the codes it has a class for and keeps them as `status_code`."""
    code = getattr(exc, "status_code", None)
    return str(code) if code else (str(exc).split(" ", 1)[0] or "ERR")


def wrong_type() -> WrongType:
    return WrongType("the key holds a non-string value; only strings can be read")
