"""Black box: popular Redis clients of several ecosystems read through the proxy, each with its
default settings, doing what a user does first.

Each client runs as its own program (e2e/compat/): it connects, reads a cached key and a missing
one, an MGET, a pipeline of 100 GETs and a PING, tries a write, and prints what it got as JSON.
The test then restarts the proxy under it and tells it to read once more: the client must
reconnect by itself. A client whose runtime or library is not installed is skipped with the
reason (`.ci/run` installs them all; `make test` installs the npm ones into e2e/compat).
redis-cli and redis-benchmark (hiredis) are driven in e2e/test_resp.py.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

COMPAT = Path(__file__).resolve().parent / "compat"
NODE_MODULES = COMPAT / "node_modules"
DEADLINE = 30.0  # seconds for one step of a client; generous, reached only when broken


def _perl_has_redis() -> bool:
    perl = shutil.which("perl")
    return (
        perl is not None and subprocess.run([perl, "-MRedis", "-e1"], check=False).returncode == 0
    )


def _ruby_has_redis() -> bool:
    ruby = shutil.which("ruby")
    check = [ruby or "ruby", "-e", "require 'redis'"]
    return ruby is not None and subprocess.run(check, check=False).returncode == 0


def _php_has_redis() -> bool:
    php = shutil.which("php")
    check = [php or "php", "-r", "exit(extension_loaded('redis') ? 0 : 1);"]
    return php is not None and subprocess.run(check, check=False).returncode == 0


def _node_has(package: str) -> bool:
    return shutil.which("node") is not None and (NODE_MODULES / package).is_dir()


@dataclass(frozen=True)
class Client:
    """A client program: its command line (`{port}` and `{prefix}` filled in), why it is
    skipped if it is, and how its library shows a missing key and PING's answer."""

    command: list[str]
    missing: str | None = None
    absent: object = None
    pong: object = "PONG"


def node(package: str, *extra: str) -> Client:
    missing = None if _node_has(package) else f"node or npm package {package} not installed"
    return Client(["node", "node_client.js", "{port}", "{prefix}", package, *extra], missing)


def python(*extra: str) -> Client:
    command = [sys.executable, "python_client.py", "{port}", "{prefix}", *extra]
    return Client(command, pong=True)  # redis-py's ping() is True


def script(runtime: str, name: str, present: bool, *extra: str, **shown: object) -> Client:
    missing = None if present else f"{runtime} or its Redis client not installed"
    return Client([runtime, name, "{port}", "{prefix}", *extra], missing, **shown)


CLIENTS: dict[str, Client] = {
    "redis-py 8, default (RESP3)": python("redis"),
    "redis-py 8, RESP2": python("redis", "2"),
    "redis-py 8 asyncio, default (RESP3)": python("redis", "default", "async"),
    "redis-py 8 asyncio, RESP2": python("redis", "2", "async"),
    "valkey-py 6": python("valkey"),
    "node-redis 5": node("redis"),
    "node-redis 5, RESP3": node("redis", "3"),
    "node-redis 6": node("redis6"),
    "ioredis 5": node("ioredis"),
    "ioredis 6": node("ioredis6"),
    "iovalkey 0.4": node("iovalkey"),
    "ruby redis 4.8": script("ruby", "ruby_client.rb", _ruby_has_redis()),
    # phpredis answers false for a missing key and true for PING, as it documents.
    "phpredis 5.3": script("php", "php_client.php", _php_has_redis(), absent=False, pong=True),
    # Redis.pm reconnects only when asked to, whatever the server: `reconnect => 2` here.
    "perl Redis 2.0, reconnect => 2": script("perl", "perl_client.pl", _perl_has_redis(), "2"),
}


class ClientProgram:
    """One client program, read line by line with a deadline."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=COMPAT,
        )
        self.pending = b""

    def result(self) -> dict[str, Any]:
        """The next line the client prints, as JSON."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + DEADLINE
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                raise AssertionError(f"no answer from the client: {self.stderr()}")
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the client exited: {self.stderr()}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return dict(json.loads(line))

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go on\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def finish(self) -> int:
        return self.process.wait(DEADLINE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)


@pytest.mark.parametrize("client", CLIENTS.values(), ids=list(CLIENTS))
def test_a_client_with_its_defaults_reads_through_the_proxy_and_survives_its_restart(
    start_proxy, redis_server, key, client: Client
) -> None:
    if client.missing is not None:
        pytest.skip(client.missing)
    names = {key(f"p{index}"): f"v{index}" for index in range(100)}
    redis_server.client.mset({key("hit"): "hit value", **names})
    proxy = start_proxy(redis_server)
    assert proxy.get(f"/get/{key('hit')}").headers["Cache-Status"].endswith("stored")
    prefix = key("")[:-1]
    command = [part.format(port=proxy.resp_port, prefix=prefix) for part in client.command]
    program = ClientProgram(command)
    try:
        got = program.result()
        assert got["hit"] == "hit value"
        assert got["miss"] == client.absent
        assert got["mget"] == ["hit value", client.absent, "v1"]
        assert got["pipeline"] == list(names.values())
        assert got["ping"] == client.pong
        assert "unknown command" in got["write_error"]
        assert "set" in got["write_error"].lower()
        proxy.stop()
        proxy.start()  # the same ports
        program.go_on()
        assert program.result() == {"after_restart": "hit value"}
        assert program.finish() == 0, program.stderr()
    finally:
        program.kill()
