"""Redis's errors (and redis-py's own) become the proxy's typed errors, with Redis's own code."""

from __future__ import annotations

import re

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ClusterDownError, ConnectionError, SlotNotCoveredError, TimeoutError

from proxy.errors import BackendRejected, BackendTimeout, BackendUnavailable, WrongType
from proxy.redis_errors import error_code, redis_errors_as_typed, typed


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("ERR The client ID you want redirect to does not exist", "ERR"),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "WRONGTYPE"),
        ("NOPERM User reader has no permissions to run the 'get' command", "NOPERM"),
        ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
        ("MISCONF Redis is configured to save RDB snapshots", "MISCONF"),
    ],
)
def test_the_error_code_is_the_one_redis_sent(line: str, code: str) -> None:
    assert error_code(BaseParser.parse_error(line)) == code


@pytest.mark.parametrize(
    ("line", "raised", "message"),
    [
        ("ERR The client ID you want redirect to does not exist", BackendRejected, "(ERR)"),
        ("NOPERM no permissions", BackendRejected, "(NOPERM)"),
        ("WRONGTYPE Operation against a key", WrongType, "non-string value"),
        ("LOADING Redis is loading the dataset in memory", BackendUnavailable, "cannot reach"),
    ],
)
def test_redis_errors_become_typed_errors(line: str, raised: type, message: str) -> None:
    with pytest.raises(raised, match=re.escape(message)), redis_errors_as_typed(1.0):
        raise BaseParser.parse_error(line)


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (TimeoutError("Timeout reading from socket"), BackendTimeout, "within 1 s"),
        (ConnectionError("Connection refused"), BackendUnavailable, "cannot reach"),
        (ClusterDownError("The cluster is down"), BackendUnavailable, "cluster cannot answer"),
        (SlotNotCoveredError("Slot 7 not covered"), BackendUnavailable, "cluster cannot answer"),
    ],
)
def test_client_side_failures_become_typed_errors(
    error: Exception, raised: type, message: str
) -> None:
    with pytest.raises(raised, match=message):
        raise_typed(error)


def raise_typed(error: Exception) -> None:
    with redis_errors_as_typed(1.0):
        raise error


def test_typed_gives_the_error_the_block_would_raise() -> None:
    error = typed(ClusterDownError("The cluster is down"), 1.0)
    assert isinstance(error, BackendUnavailable) and "cluster" in str(error)
