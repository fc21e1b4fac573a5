"""Backend: Redis's error lines become the proxy's typed errors, with Redis's own code."""

from __future__ import annotations

import re

import pytest
from redis._parsers.base import BaseParser

from proxy.backend import error_code, redis_errors_as_typed
from proxy.errors import BackendRejected, BackendUnavailable, WrongType


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
