"""Factory fixtures: real Redis servers and proxies with the configuration each test needs."""

from __future__ import annotations

import itertools
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.servers import Proxy, RedisServer, reserve_port

StartProxy = Callable[..., Proxy]
_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis shared by the tests that only read and write their own unique keys."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private Redis servers (options as RedisServer's), for tests that stop or reconfigure them."""
    servers: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def proxy_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment for one proxy: a free port plus the settings a test passes."""

    def make(redis: RedisServer, **settings: object) -> dict[str, str]:
        env = {"REDIS_URL": redis.url, "PROXY_HOST": "127.0.0.1", "PROXY_PORT": str(reserve_port())}
        env["RESP_PORT"] = str(reserve_port())
        env.update({name.upper(): str(value) for name, value in settings.items()})
        return env

    return make


@pytest.fixture
def start_proxy(tmp_path: Path, proxy_env: Callable[..., dict[str, str]]) -> Iterator[StartProxy]:
    """Start proxies with chosen settings, e.g. `start_proxy(redis, cache_ttl=1)`, and
    optionally a (soft, hard) open-files limit and, with TLS on, the client context its
    readiness probe uses; stop all."""
    proxies: list[Proxy] = []

    def start(
        redis: RedisServer,
        open_files: tuple[int, int] | None = None,
        client_tls: ssl.SSLContext | None = None,
        **settings: object,
    ) -> Proxy:
        log_path = tmp_path / f"proxy-{next(_counter)}.log"
        env = proxy_env(redis, **settings)
        proxy = Proxy(env, log_path, open_files=open_files, tls=client_tls)
        proxies.append(proxy)
        return proxy.start()

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def key() -> Callable[[str], str]:
    """Unique key names per test, so tests sharing one Redis never see each other's data."""
    prefix = uuid.uuid4().hex[:12]

    def name_key(name: str = "k") -> str:
        return f"{prefix}:{name}"

    return name_key
