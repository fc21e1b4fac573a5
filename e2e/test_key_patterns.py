"""KEY_PATTERNS means what it means in Redis: random globs and keys, matched by the proxy and by
a real redis-server's own ACL (ACL DRYRUN), must agree."""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.access import key_matcher

PATTERNS = st.text(alphabet="ab*?[]^-\\", min_size=1, max_size=8)
KEYS = st.text(alphabet="abc[]^-\\*", max_size=6)


def redis_allows(client: redis.Redis, pattern: str, key: str) -> bool:
    client.execute_command(
        "ACL", "SETUSER", "probe", "reset", "on", "nopass", "+get", "~" + pattern
    )
    answer = client.execute_command("ACL", "DRYRUN", "probe", "GET", key)
    return answer in (b"OK", "OK")


@pytest.fixture(scope="module")
def acl_client(redis_server) -> redis.Redis:
    client: redis.Redis = redis_server.client
    try:
        client.execute_command("ACL", "DRYRUN", "default", "GET", "k")
    except redis.ResponseError as exc:
        pytest.skip(f"this Redis has no ACL DRYRUN (Redis 7.0 or later): {exc}")
    return client


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=PATTERNS, keys=st.lists(KEYS, min_size=1, max_size=4))
@example(pattern="**", keys=[""])  # Redis matches no empty key but with `*` itself
@example(pattern="a[b-", keys=["ab", "a-", "a"])
def test_the_proxy_matches_keys_as_redis_acl_does(acl_client, pattern, keys) -> None:
    matcher = key_matcher((pattern,))
    for key in keys:
        ours = True if matcher is None else bool(matcher(key.encode()))
        assert ours == redis_allows(acl_client, pattern, key), (pattern, key)
