"""Black box over RESP: redis-py, redis-cli and raw sockets against the production proxy."""

from __future__ import annotations

import os
import pty
import select
import shutil
import socket
import subprocess

import pytest
import redis
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.servers import poll

CURSOR_QUERY = b"\x1b[6n"  # "where is the cursor?", as a terminal would be asked
needs_redis_cli = pytest.mark.skipif(
    shutil.which("redis-cli") is None, reason="redis-cli is not installed (Debian redis-tools)"
)


@pytest.fixture
def proxy(start_proxy, redis_server):
    return start_proxy(redis_server)


def client_for(proxy, **options) -> redis.Redis:
    return redis.Redis(port=proxy.resp_port, socket_timeout=5, **options)


def raw(proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.resp_port), timeout=5)


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


@pytest.mark.parametrize("protocol", [None, 2], ids=["redis-py-default", "protocol-2"])
def test_redis_py_hit_and_miss(proxy, redis_server, key, protocol) -> None:
    redis_server.client.set(key(), b"\x00binary\xff")
    options = {} if protocol is None else {"protocol": protocol}
    client = client_for(proxy, single_connection_client=True, **options)
    assert client.get(key()) == b"\x00binary\xff"
    assert client.get(key("absent")) is None
    assert client.mget(key(), key("absent")) == [b"\x00binary\xff", None]
    expected_protocol = 3 if protocol is None else 2  # redis-py 8 sends HELLO 3 by default
    assert client.connection is not None
    assert int(client.connection.protocol) == expected_protocol


def test_both_protocols_share_one_cache(proxy, redis_server, key) -> None:
    redis_server.client.set(key("via-http"), b"a")
    redis_server.client.set(key("via-resp"), b"b")
    assert requests.get(f"{proxy.url}/get/{key('via-http')}", timeout=5).content == b"a"
    assert client_for(proxy).get(key("via-resp")) == b"b"
    before = redis_server.get_calls()
    assert client_for(proxy).get(key("via-http")) == b"a"  # cached by HTTP: a RESP hit
    assert requests.get(f"{proxy.url}/get/{key('via-resp')}", timeout=5).content == b"b"
    assert redis_server.get_calls() == before


def test_a_thousand_pipelined_commands(proxy, redis_server, key) -> None:
    for i in range(0, 1000, 10):
        redis_server.client.set(key(str(i)), str(i))
    pipe = client_for(proxy).pipeline(transaction=False)
    for i in range(1000):
        pipe.get(key(str(i)))
    expected = [str(i).encode() if i % 10 == 0 else None for i in range(1000)]
    assert pipe.execute() == expected


def test_unknown_command_keeps_the_connection(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"v")
    client = client_for(proxy, single_connection_client=True)
    with pytest.raises(redis.ResponseError, match="unknown command 'SET'"):
        client.set(key(), b"write")
    assert client.get(key()) == b"v"
    assert redis_server.client.get(key()) == b"v"  # the write never reached Redis


def test_inline_command_from_telnet(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"typed")
    with raw(proxy) as sock:
        sock.sendall(f"GET {key()}\r\nPING\r\n".encode())
        assert read_until(sock, b"+PONG\r\n") == b"$5\r\ntyped\r\n+PONG\r\n"


def test_malformed_frame_closes_with_a_protocol_error(proxy) -> None:
    with raw(proxy) as sock:
        sock.sendall(b"*1\r\n$nonsense\r\n")
        assert read_until(sock, b"\r\n") == b"-ERR Protocol error: invalid bulk length\r\n"
        assert sock.recv(1) == b""
    assert client_for(proxy).ping() is True


def test_client_limit_is_answered_with_redis_wording(start_proxy, redis_server) -> None:
    proxy = start_proxy(redis_server, max_connections=2)
    held = [client_for(proxy, single_connection_client=True) for _ in range(2)]
    assert all(client.ping() for client in held)
    with raw(proxy) as sock:
        assert read_until(sock, b"\r\n") == b"-ERR max number of clients reached\r\n"
        assert sock.recv(1) == b""
    with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
        client_for(proxy).ping()
    assert all(client.ping() for client in held)


def test_stalled_miss_does_not_stall_other_resp_clients(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    backing.client.set("hot", b"cached")
    proxy = start_proxy(backing, redis_timeout=5, max_parallel=2)
    assert client_for(proxy).get("hot") == b"cached"
    waiting = raw(proxy)
    backing.client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    try:
        waiting.sendall(b"GET cold\r\n")
        assert client_for(proxy).get("hot") == b"cached"
        # One event loop reads both connections in order, so an answer to the miss would
        # have been written before the hit's; none is there, while Redis is still paused.
        assert not select.select([waiting], [], [], 0)[0]
    finally:
        backing.client.execute_command("CLIENT", "UNPAUSE")
    assert read_until(waiting, b"\r\n") == b"$-1\r\n"


def test_redis_down_misses_are_tryagain_and_hits_still_served(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    backing.client.set("kept", b"1")
    proxy = start_proxy(backing, redis_timeout=0.5)
    client = client_for(proxy, single_connection_client=True)
    assert client.get("kept") == b"1"
    backing.stop()
    assert client.get("kept") == b"1"
    with pytest.raises(redis.exceptions.ResponseError, match="cannot reach Redis"):
        client.get("uncached")
    assert client.ping() is True


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@needs_redis_cli
def test_redis_cli_one_shot(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"from cli")
    run = run_tool("redis-cli", "-p", str(proxy.resp_port), "GET", key())
    assert (run.returncode, run.stdout) == (0, "from cli\n")
    run = run_tool("redis-cli", "-p", str(proxy.resp_port), "--no-raw", "GET", key("absent"))
    assert run.stdout == "(nil)\n"


@needs_redis_cli
def test_redis_cli_interactive(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"interactive")
    controller, terminal = pty.openpty()
    cli = subprocess.Popen(
        ["redis-cli", "-p", str(proxy.resp_port)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    prompt = f"127.0.0.1:{proxy.resp_port}> ".encode()

    def wait_for(expected: bytes, since: int) -> int:
        """Where `expected`, shown at or after `since`, ends on the screen."""

        def shown() -> bool:
            nonlocal screen
            if select.select([controller], [], [], 0.05)[0]:
                output = os.read(controller, 65536)
                # linenoise asks the terminal where the cursor is, and waits for the answer.
                for _ in range(output.count(CURSOR_QUERY)):
                    os.write(controller, b"\x1b[1;1R")
                screen += output
            return expected in screen[since:]

        try:
            poll(shown, 10, f"redis-cli to show {expected!r}")
        except AssertionError:
            raise AssertionError(f"redis-cli screen so far: {screen!r}") from None
        return screen.index(expected, since) + len(expected)

    # linenoise redraws the prompt as it echoes each key, and flushes what is typed before it
    # goes back to raw mode: a line counts as read only at a prompt drawn after its answer.
    ready = wait_for(prompt, 0)

    def type_and_wait(line: str, expected: bytes) -> None:
        nonlocal ready
        os.write(controller, line.encode() + b"\r")
        ready = wait_for(prompt, wait_for(expected, ready))

    try:
        type_and_wait(f"GET {key()}", b'"interactive"')
        type_and_wait(f"GET {key('absent')}", b"(nil)")
        type_and_wait("SET x y", b"(error) ERR unknown command 'SET'")
        type_and_wait("PING", b"PONG")
        os.write(controller, b"QUIT\r")
        assert cli.wait(timeout=10) == 0
    finally:
        cli.kill()
        os.close(controller)


@needs_redis_cli
def test_redis_benchmark_get_runs_against_the_proxy(proxy) -> None:
    port = str(proxy.resp_port)
    run = run_tool("redis-benchmark", "-p", port, "-t", "get", "-n", "5000", "-c", "10", "--csv")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].startswith('"GET",')


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=st.binary(max_size=120))
def test_fuzzed_frames_leave_the_proxy_serving(proxy, frame: bytes) -> None:
    with raw(proxy) as sock:
        sock.settimeout(2)
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass  # the proxy answers what it can, then closes: never hangs
    assert client_for(proxy).ping() is True


def test_a_huge_number_after_a_miss_keeps_replies_in_step(proxy, redis_server, key) -> None:
    redis_server.client.set(key("1"), b"one")
    redis_server.client.set(key("2"), b"two")
    nines = "9" * 5000
    sock = raw(proxy)
    frame = (
        f"GET {key('absent')}\r\nGET {key('1')}\r\nSELECT {nines}\r\nGET {key('2')}\r\n"
    ).encode()
    sock.sendall(frame)
    expected = b"$-1\r\n$3\r\none\r\n-ERR value is not an integer or out of range\r\n$3\r\ntwo\r\n"
    assert read_until(sock, b"two\r\n") == expected
    sock.sendall(f"GET {key('1')}\r\n".encode())
    assert read_until(sock, b"\r\none\r\n") == b"$3\r\none\r\n"
