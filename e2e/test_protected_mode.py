"""Protected mode against the production start, with a client on another host for real: the
proxy runs in a network namespace this test creates (a veth pair joins it to this host), bound
to every interface there; this host is then "another computer", and loopback inside the
namespace is the proxy's own host. Nothing connects to this machine's own addresses."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from harness.servers import Proxy, RedisServer, reserve_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="a network namespace needs root and the ip command",
)
SCRIPT = """
import sys, urllib.request, urllib.error
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=10)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
"""


class Namespace:
    """A network namespace joined to this host by a veth pair on a private /30."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"rcp-{tag}"
        subnet = random.randrange(0, 1 << 14) * 4  # 10.200.0.0/16, in /30s
        base = f"10.{200 + (subnet >> 16)}.{(subnet >> 8) & 255}"
        self.host_address, self.address = (
            f"{base}.{(subnet & 255) + 1}",
            f"{base}.{(subnet & 255) + 2}",
        )
        self.outside, self.inside = f"rcp{tag}h", f"rcp{tag}n"

    def create(self) -> Namespace:
        for command in (
            f"netns add {self.name}",
            f"link add {self.outside} type veth peer name {self.inside}",
            f"link set {self.inside} netns {self.name}",
            f"addr add {self.host_address}/30 dev {self.outside}",
            f"link set {self.outside} up",
            f"-n {self.name} addr add {self.address}/30 dev {self.inside}",
            f"-n {self.name} link set {self.inside} up",
            f"-n {self.name} link set lo up",
        ):
            subprocess.run(["ip", *command.split()], check=True, capture_output=True, timeout=10)
        return self

    def run(self, *command: str) -> str:
        """`command` inside the namespace; its standard output."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *command],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return done.stdout.strip()

    def delete(self) -> None:
        subprocess.run(
            ["ip", "netns", "del", self.name], check=False, capture_output=True, timeout=10
        )
        subprocess.run(
            ["ip", "link", "del", self.outside], check=False, capture_output=True, timeout=10
        )


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    created = Namespace()
    try:
        created.create()
    except subprocess.CalledProcessError as exc:
        created.delete()
        pytest.skip(f"could not create a network namespace: {exc.stderr!r}")
    yield created
    created.delete()


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis the namespace reaches through a Unix socket (the filesystem is shared)."""
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "redis", ["--unixsocket", str(sock), "--unixsocketperm", "777"])
    server.url = f"unix://{sock}"
    yield server.start()
    server.stop()


@pytest.fixture
def proxy_in(namespace, unix_redis, tmp_path) -> Iterator[object]:
    proxies: list[Proxy] = []

    def start(**settings: str) -> Proxy:
        env = {"REDIS_URL": unix_redis.url, "PROXY_HOST": "0.0.0.0"}
        env |= {"PROXY_PORT": str(reserve_port()), "RESP_PORT": str(reserve_port()), **settings}
        log = tmp_path / f"proxy-{len(proxies)}.log"
        prefix = ("ip", "netns", "exec", namespace.name)
        proxy = Proxy(env, log, host=namespace.address, prefix=prefix)
        proxies.append(proxy)
        return proxy.start()

    yield start
    for proxy in proxies:
        proxy.stop()


def resp_answer(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=10) as sock:
        sock.sendall(b"GET k\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_clients_from_other_hosts_are_refused_with_how_to_fix_it(
    namespace, unix_redis, proxy_in
) -> None:
    unix_redis.client.set("k", b"value")
    proxy = proxy_in()
    refused = requests.get(f"{proxy.url}/get/k", timeout=10)
    assert (refused.status_code, refused.json()["error"]) == (403, "protected_mode")
    assert "PROXY_PASSWORD" in refused.json()["detail"]
    assert "PROTECTED_MODE=no" in refused.json()["detail"]
    denied = resp_answer(namespace.address, proxy.resp_port)
    assert denied.startswith(b"-DENIED redis-cache-proxy is running in protected mode")
    assert denied.endswith(b"\r\n") and denied.count(b"\r\n") == 1  # then closed

    # Loopback, inside the namespace: the proxy's own host is served.
    local = namespace.run("python3", "-c", SCRIPT, f"http://127.0.0.1:{proxy.port}/get/k")
    assert local == "200 value"
    if shutil.which("redis-cli"):
        assert namespace.run("redis-cli", "-p", str(proxy.resp_port), "GET", "k") == "value"
    log = proxy.log()
    assert f"HTTP client {namespace.host_address} refused: protected_mode" in log
    assert f"RESP client {namespace.host_address} refused: protected_mode" in log


@pytest.mark.parametrize(
    ("settings", "password"),
    [({"PROTECTED_MODE": "no"}, None), ({"PROXY_PASSWORD": "s3cret"}, "s3cret")],
    ids=["protected-mode-off", "password-set"],
)
def test_other_hosts_are_served_once_the_operator_chose_how(
    namespace, unix_redis, proxy_in, settings, password
) -> None:
    unix_redis.client.set("k", b"value")
    proxy = proxy_in(**settings)
    headers = {"Authorization": f"Bearer {password}"} if password else {}
    assert requests.get(f"{proxy.url}/get/k", headers=headers, timeout=10).content == b"value"
    client = redis.Redis(host=namespace.address, port=proxy.resp_port, password=password)
    assert client.get("k") == b"value"
