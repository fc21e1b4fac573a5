"""The RESP server in-process over a fake Redis: raw bytes on the wire, and redis-py clients."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

from harness.servers import poll
from proxy import errors
from proxy.access import Access
from proxy.cache import ReadThroughCache
from proxy.resp import codec as wire
from proxy.resp.commands import ERROR_MAP
from proxy.resp.server import LISTEN_FAILED, RespServer

DEADLINE = 5.0
DATA: dict[bytes, bytes | Exception] = {
    b"k": b"v",
    b"big": b"x" * 5_000_000,
    b"list": errors.WrongType("not a string"),
}


class Fetch:
    """A fake backend: DATA, plus per-key blocking and errors chosen by the test."""

    def __init__(self) -> None:
        self.blocked: dict[bytes, threading.Event] = {}
        self.started = threading.Event()
        self.calls = 0
        self.by_key: Counter[bytes] = Counter()

    def __call__(self, key: bytes) -> bytes | None:
        self.calls += 1
        self.by_key[key] += 1
        if key in self.blocked:
            self.started.set()
            assert self.blocked[key].wait(DEADLINE)
        value = DATA.get(key, b"fetched:" + key if key.startswith(b"f") else None)
        if isinstance(value, Exception):
            raise value
        return value


@pytest.fixture
def fetch() -> Fetch:
    return Fetch()


@pytest.fixture
def start_server(fetch: Fetch) -> Iterator[Callable[..., RespServer]]:
    servers: list[RespServer] = []

    def start(
        max_parallel: int = 4,
        max_connections: int = 50,
        send_timeout: float = 30.0,
        access: Access | None = None,
    ) -> RespServer:
        cache = ReadThroughCache(maxsize=100, ttl=60, load=lambda key: (fetch(key), None))
        server = RespServer(
            cache,
            host="127.0.0.1",
            port=0,  # the kernel picks a free one; server.port says which
            max_parallel=max_parallel,
            max_connections=max_connections,
            send_timeout=send_timeout,
            access=access,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop(timeout=2)


@pytest.fixture
def server(start_server: Callable[..., RespServer]) -> RespServer:
    return start_server()


class Raw:
    """A raw socket that checks the exact bytes the server answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)

    def send(self, data: bytes) -> Raw:
        self.sock.sendall(data)
        return self

    def expect(self, expected: bytes) -> None:
        got = b""
        while len(got) < len(expected):
            chunk = self.sock.recv(len(expected) - len(got))
            assert chunk, f"closed after {got!r}, expected {expected!r}"
            got += chunk
        assert got == expected

    def expect_line(self, prefix: bytes) -> None:
        """One whole reply line, which must start with `prefix`."""
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            assert chunk, f"closed after {line!r}"
            line += chunk
        assert line.startswith(prefix), line

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""


def test_get_hit_and_miss_in_resp2(server) -> None:
    Raw(server.port).send(b"GET k\r\nGET absent\r\n").expect(b"$1\r\nv\r\n$-1\r\n")


def test_hello_3_switches_the_connection_to_resp3_nulls(server) -> None:
    raw = Raw(server.port).send(b"HELLO 3\r\n")
    raw.expect(b"%7\r\n$6\r\nserver\r\n$17\r\nredis-cache-proxy\r\n")
    raw.sock.recv(4096)  # the rest of the map
    raw.send(b"GET absent\r\nHELLO 2\r\n").expect(b"_\r\n*14\r\n")


@pytest.mark.parametrize(
    ("protocol", "parser"),
    [(3, _RESP3Parser), (2, _RESP2Parser), (3, _HiredisParser), (2, _HiredisParser)],
    ids=["resp3-python", "resp2-python", "resp3-hiredis", "resp2-hiredis"],
)
def test_redis_py_reads_hits_misses_and_mget(server, protocol, parser) -> None:
    pool = redis.ConnectionPool(
        port=server.port, protocol=protocol, parser_class=parser, socket_timeout=DEADLINE
    )
    client = redis.Redis(connection_pool=pool)
    assert client.get("k") == b"v"
    assert client.get("absent") is None
    assert client.mget("k", "absent", "fresh", "list") == [b"v", None, b"fetched:fresh", None]
    assert client.ping() is True
    assert client.echo("hi") == b"hi"
    client.client_setname("reader")
    assert client.client_getname() in (b"reader", "reader")  # redis-py decodes it on RESP2
    assert pool.get_connection().protocol in (protocol, str(protocol))


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_reads_info_and_config_as_from_a_standalone_redis(server, protocol) -> None:
    client = redis.Redis(port=server.port, protocol=protocol, socket_timeout=DEADLINE)
    assert client.get("k") == b"v"  # cached now: one key
    info = client.info()
    assert info["redis_version"] == "7.2.0"
    assert (info["loading"], info["role"], info["cluster_enabled"]) == (0, "master", 0)
    assert info["server_name"] == "redis-cache-proxy"
    assert (info["connected_clients"], info["maxclients"], info["tcp_port"]) == (1, 50, server.port)
    assert (info["keyspace_misses"], info["maxmemory_policy"]) == (1, "allkeys-lru")
    assert info["db0"] == {"keys": 1, "expires": 1, "avg_ttl": 0}
    assert set(client.info("clients")) == {"connected_clients", "maxclients", "blocked_clients"}
    assert client.config_get("max*") == {
        "maxclients": "50",
        "maxmemory": "0",
        "maxmemory-policy": "allkeys-lru",
    }


def test_client_info_describes_the_connection_as_redis_does(server) -> None:
    client = redis.Redis(port=server.port, protocol=3, socket_timeout=DEADLINE)
    client.client_setname("reader")
    client.execute_command("CLIENT SETINFO LIB-NAME", "py")
    info = client.client_info()
    assert info["name"] == "reader"
    assert (info["lib-name"], info["resp"], info["db"], info["user"]) == ("py", "3", 0, "default")
    assert info["laddr"] == f"127.0.0.1:{server.port}"
    assert str(info["addr"]).startswith("127.0.0.1:")
    assert info["id"] == client.client_id()


def test_unknown_command_is_an_error_and_the_connection_stays(server) -> None:
    raw = Raw(server.port).send(b"SET a b\r\nPING\r\n")
    raw.expect(b"-ERR unknown command 'SET', with args beginning with: 'a' 'b' \r\n+PONG\r\n")


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (b"GET\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),
        (b"HELLO 4\r\n", b"-NOPROTO unsupported protocol version\r\n"),
        (b"HELLO 3 AUTH u p\r\n", b"-WRONGPASS invalid username-password pair"),
        (b"AUTH secret\r\n", b"-ERR AUTH <password> called without any password configured"),
        (b"AUTH default anything\r\n", b"+OK\r\n"),  # Redis's `nopass` default user
        (b"SELECT 0\r\n", b"+OK\r\n"),
        (b"SELECT 1\r\n", b"-ERR DB index is out of range"),
        (b"CLIENT ID\r\n", b":"),
        (b"CLIENT SETINFO LIB-NAME x\r\n", b"+OK\r\n"),
        (b"CLIENT KILL x\r\n", b"-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n"),
        (b"COMMAND COUNT\r\n", b":16\r\n"),
        (b"INFO nosuchsection\r\n", b"$0\r\n\r\n"),
        (b"INFO persistence\r\n", wire.bulk(b"# Persistence\r\nloading:0\r\nasync_loading:0\r\n")),
        (b"CONFIG GET nosuch*\r\n", b"*0\r\n"),
        (
            b"CONFIG GET MAXMEMORY-P*\r\n",
            b"*2\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n",
        ),
        (b"CONFIG SET maxclients 1\r\n", b"-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n"),
        (b"CONFIG GET\r\n", b"-ERR wrong number of arguments for 'config|get'\r\n"),
        (b"CLUSTER INFO\r\n", b"-ERR This instance has cluster support disabled\r\n"),
        (b"CLUSTER NODES\r\n", b"-ERR This instance has cluster support disabled\r\n"),
        (b"READONLY\r\n", b"-ERR This instance has cluster support disabled\r\n"),
        (b"READWRITE\r\n", b"-ERR This instance has cluster support disabled\r\n"),
        (wire.request([b"CLIENT", b"SETINFO", b"LIB-VER", b"a b"]), b"-ERR LIB-VER cannot contain"),
        (b"COMMAND DOCS\r\n", b"*0\r\n"),
        (b"PING hello\r\n", b"$5\r\nhello\r\n"),
        (b"RESET\r\n", b"+RESET\r\n"),
        (b"get k\r\n", b"$1\r\nv\r\n"),
    ],
)
def test_command_replies(server, request_: bytes, reply: bytes) -> None:
    raw = Raw(server.port).send(request_ + b"PING\r\n")
    raw.expect(reply)
    rest = b""
    while not rest.endswith(b"+PONG\r\n"):  # the connection survives every one of these
        chunk = raw.sock.recv(4096)
        assert chunk, "the server closed the connection"
        rest += chunk


def test_quit_answers_ok_and_closes(server) -> None:
    raw = Raw(server.port).send(b"QUIT\r\n")
    raw.expect(b"+OK\r\n")
    assert raw.closed_by_server()


def test_a_client_that_half_closes_still_gets_its_answers(server, fetch) -> None:
    fetch.blocked[b"fslow"] = release = threading.Event()
    raw = Raw(server.port).send(b"GET k\r\nGET fslow\r\nGET k\r\n")
    raw.sock.shutdown(socket.SHUT_WR)
    assert fetch.started.wait(DEADLINE)
    release.set()
    raw.expect(b"$1\r\nv\r\n$13\r\nfetched:fslow\r\n$1\r\nv\r\n")
    assert raw.closed_by_server()


def test_a_thousand_pipelined_commands_answer_in_order(server) -> None:
    request_ = b"".join(b"GET %s\r\n" % (b"k" if i % 3 else b"f%d" % i) for i in range(1000))
    expected = b"".join(
        b"$1\r\nv\r\n" if i % 3 else b"$%d\r\nfetched:f%d\r\n" % (len(b"fetched:f%d" % i), i)
        for i in range(1000)
    )
    Raw(server.port).send(request_).expect(expected)


@pytest.mark.parametrize("repeats", [1, 30])  # 7 GETs in a frame, and 210 (over MAX_GET_RUN)
def test_a_pipelined_run_of_gets_answers_hits_and_misses_in_order(server, fetch, repeats) -> None:
    raw = Raw(server.port)
    raw.send(wire.request([b"GET", b"k"])).expect(b"$1\r\nv\r\n")  # now cached
    keys = [b"k", b"k", b"f1", b"k", b"absent", b"f2", b"k"] * repeats
    raw.send(b"".join(wire.request([b"GET", key]) for key in keys))
    replies = {b"k": b"$1\r\nv\r\n", b"absent": b"$-1\r\n"}
    replies |= {key: b"$10\r\nfetched:%s\r\n" % key for key in (b"f1", b"f2")}
    raw.expect(b"".join(replies[key] for key in keys))
    # k, f1 and f2 once each (then cached): hits never reach the backend; absent (never
    # cached) at most once per GET, and once per run of GETs fetched together
    assert [fetch.by_key[key] for key in (b"k", b"f1", b"f2")] == [1, 1, 1]
    assert 1 <= fetch.by_key[b"absent"] <= repeats


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    ],
)
def test_malformed_frame_gets_protocol_error_then_close(server, frame, error) -> None:
    raw = Raw(server.port).send(b"PING\r\n" + frame)
    raw.expect(b"+PONG\r\n" + error)
    assert raw.closed_by_server()


def test_a_huge_number_in_a_command_is_an_error_in_its_place(server) -> None:
    nines = b"9" * 5000
    frame = [b"GET absent", b"GET k", b"SELECT " + nines, b"HELLO " + nines, b"GET k"]
    raw = Raw(server.port).send(b"".join(wire.request(c.split()) for c in frame))
    raw.expect(
        b"$-1\r\n$1\r\nv\r\n-ERR value is not an integer or out of range\r\n"
        b"-ERR Protocol version is not an integer or out of range\r\n$1\r\nv\r\n"
    )
    raw.send(b"GET k\r\n").expect(b"$1\r\nv\r\n")  # and in step after it


# Commands with the reply each owes (the fake backend: "k" cached or not, "f..." fetched).
OWED = {
    b"PING": b"+PONG\r\n",
    b"GET k": b"$1\r\nv\r\n",
    b"GET absent": b"$-1\r\n",
    b"GET f1": b"$10\r\nfetched:f1\r\n",
    b"ECHO hi": b"$2\r\nhi\r\n",
    b"SELECT 0": b"+OK\r\n",
    b"SELECT " + b"9" * 5000: b"-ERR value is not an integer or out of range\r\n",
}
GARBAGE = [
    b"*x\r\n",
    b"*1\r\n:1\r\n",
    b"*1\r\n$-5\r\n",
    b"*1\r\n$3\r\nGETXY",
    b"*" + b"9" * 5000 + b"\r\n",
    b"*2\r\n$3\r\nGET\r\n$" + b"9" * 5000 + b"\r\n",
]


@settings(
    max_examples=int(os.environ.get("GARBAGE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.sampled_from(sorted(OWED)), max_size=12),
    st.sampled_from(GARBAGE),
    st.lists(st.integers(0, 10_000), max_size=3),
)
def test_garbage_anywhere_gets_the_owed_replies_in_order_then_one_error(
    server, owed: list[bytes], garbage: bytes, cuts: list[int]
) -> None:
    stream = b"".join(wire.request(command.split()) for command in owed) + garbage
    raw = Raw(server.port)
    at = 0
    for cut in sorted(cut % (len(stream) + 1) for cut in cuts):  # any split between reads
        raw.send(stream[at:cut])
        at = cut
    raw.send(stream[at:])
    raw.sock.shutdown(socket.SHUT_WR)  # all sent: the server need not linger for more
    raw.expect(b"".join(OWED[command] for command in owed))
    raw.expect_line(b"-ERR Protocol error: ")
    assert raw.closed_by_server()


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (errors.BackendUnavailable("cannot reach Redis"), b"-TRYAGAIN cannot reach Redis"),
        (errors.BackendTimeout("too slow"), b"-TRYAGAIN too slow"),
        (errors.BackendRejected("Redis refused the read (NOPERM)"), b"-ERR backend: "),
        (
            errors.WrongType("x"),
            b"-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
    ],
)
def test_backend_errors_map_to_resp_errors_and_the_connection_survives(server, error, line) -> None:
    DATA[b"failing"] = error
    try:
        raw = Raw(server.port).send(b"GET failing\r\n")
        raw.expect_line(line)
        raw.send(b"PING\r\n").expect(b"+PONG\r\n")
    finally:
        del DATA[b"failing"]


def test_client_gone_mid_frame_or_mid_reply_costs_nothing(server) -> None:
    Raw(server.port).send(b"*2\r\n$3\r\nGET\r\n$1").sock.close()
    Raw(server.port).send(b"GET big\r\n").sock.close()  # 5 MB reply never read
    Raw(server.port).send(b"GET k\r\n").expect(b"$1\r\nv\r\n")


def test_a_miss_waiting_on_redis_does_not_stall_other_clients_hits(server, fetch) -> None:
    fetch.blocked[b"fslow"] = release = threading.Event()
    Raw(server.port).send(b"GET k\r\n").expect(b"$1\r\nv\r\n")
    waiting = Raw(server.port).send(b"GET fslow\r\n")
    assert fetch.started.wait(DEADLINE)
    Raw(server.port).send(b"GET k\r\n").expect(b"$1\r\nv\r\n")  # answered: the miss is held
    release.set()
    waiting.expect(b"$13\r\nfetched:fslow\r\n")


def test_with_max_parallel_1_a_hit_waits_for_the_miss_in_progress(start_server, fetch) -> None:
    server = start_server(max_parallel=1)
    fetch.blocked[b"fslow"] = release = threading.Event()
    Raw(server.port).send(b"GET k\r\n").expect(b"$1\r\nv\r\n")
    waiting = Raw(server.port).send(b"GET fslow\r\n")
    assert fetch.started.wait(DEADLINE)
    hit = Raw(server.port).send(b"GET k\r\n")
    poll(lambda: server.pool.waiting == 1, DEADLINE, "the hit to wait for the only slot")
    assert not select.select([hit.sock], [], [], 0)[0]  # read, parked, and not answered
    release.set()
    waiting.expect(b"$13\r\nfetched:fslow\r\n")
    hit.expect(b"$1\r\nv\r\n")


def test_client_past_the_limit_gets_redis_error_then_close(start_server) -> None:
    server = start_server(max_connections=2)
    first, second = Raw(server.port), Raw(server.port)
    for raw in (first, second):
        raw.send(b"PING\r\n").expect(b"+PONG\r\n")
    extra = Raw(server.port)
    extra.expect(b"-ERR max number of clients reached\r\n")
    assert extra.closed_by_server()
    second.send(b"GET k\r\n").expect(b"$1\r\nv\r\n")
    first.sock.close()
    deadline = time.monotonic() + DEADLINE
    while True:  # the slot is free as soon as the server has seen the hang-up
        newcomer = Raw(server.port).send(b"PING\r\n")
        if newcomer.sock.recv(7) == b"+PONG\r\n":
            break
        assert time.monotonic() < deadline


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.binary(max_size=12), min_size=1, max_size=5).map(
            lambda args: (
                b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
            )
        ),
    )
)
def test_fuzzed_frames_never_break_the_server(server, frame: bytes) -> None:
    raw = Raw(server.port)
    raw.send(frame)
    raw.sock.shutdown(socket.SHUT_WR)
    try:
        while raw.sock.recv(65536):
            pass  # whatever it answers, it must end the reply and close in time
    except ConnectionResetError:
        pass
    raw.sock.close()
    Raw(server.port).send(b"PING\r\n").expect(b"+PONG\r\n")


def test_every_proxy_error_has_a_resp_error_line() -> None:
    pending = list(errors.ProxyError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        assert any(base in ERROR_MAP for base in cls.__mro__), cls


def test_refused_clients_linger_no_more_than_max_connections(start_server) -> None:
    server = start_server(max_connections=2)
    kept = [Raw(server.port).send(b"PING\r\n") for _ in range(2)]
    for raw in kept:
        raw.expect(b"+PONG\r\n")
    refused = [Raw(server.port) for _ in range(20)]
    for raw in refused:
        raw.expect(b"-ERR max number of clients reached\r\n")
    assert server.refused == 20
    assert len(server.refusing) <= 2  # the rest were closed once the error was written
    kept[0].send(b"GET k\r\n").expect(b"$1\r\nv\r\n")


def test_a_listener_uvloop_closed_on_an_accept_error_listens_again(server) -> None:
    def close_as_uvloop_does() -> None:
        assert server._server is not None
        server._server.close()
        server._on_loop_error(server._loop, {"message": LISTEN_FAILED, "exception": OSError(24)})

    server._loop.call_soon_threadsafe(close_as_uvloop_does)
    poll(lambda: server._server is not None and not server._server.is_serving(), DEADLINE, "close")

    def answers() -> bool:
        try:
            Raw(server.port).send(b"PING\r\n").expect(b"+PONG\r\n")
        except OSError:
            return False
        return True

    poll(answers, DEADLINE, "the listener to be back")


def test_a_client_that_takes_no_replies_is_dropped_after_the_send_timeout(start_server) -> None:
    server = start_server(send_timeout=0.5)
    stuck = Raw(server.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.send(b"GET big\r\n")  # 5 MB it never reads
    poll(lambda: server.dropped["send_timeout"] == 1, DEADLINE, "the stuck client to be dropped")
    Raw(server.port).send(b"GET k\r\n").expect(b"$1\r\nv\r\n")


SECURED = Access("s3cret", ("k", "f*"), protected=False)
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
NOPERM = b"-NOPERM No permissions to access a key\r\n"


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (b"GET k\r\n", NOAUTH),
        (b"GET k\r\nGET k\r\n", NOAUTH * 2),  # the pipelined-GET fast path refuses too
        (b"PING\r\n", NOAUTH),
        (b"MGET k\r\n", NOAUTH),
        (b"CLIENT ID\r\n", NOAUTH),
        (b"GET\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),  # Redis's order
        (b"SET a b\r\n", b"-ERR unknown command 'SET', with args beginning with: 'a' 'b' \r\n"),
        (b"HELLO 3\r\n", b"-NOAUTH HELLO must be called with the client already authenticated"),
        (b"HELLO 3 AUTH default wrong\r\n", WRONGPASS),
        (b"HELLO 3 AUTH bob s3cret\r\n", WRONGPASS),
        (b"HELLO 2 AUTH default s3cret\r\n", b"*14\r\n$6\r\nserver\r\n"),
        (b"AUTH wrong\r\n", WRONGPASS),
        (b"AUTH bob s3cret\r\n", WRONGPASS),
        (b"AUTH s3cret\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n"),
        (b"AUTH default s3cret\r\nGET k\r\nGET k\r\n", b"+OK\r\n" + b"$1\r\nv\r\n" * 2),
        (b"AUTH wrong\r\nAUTH s3cret\r\nPING\r\n", WRONGPASS + b"+OK\r\n+PONG\r\n"),
        (b"AUTH s3cret\r\nRESET\r\nGET k\r\n", b"+OK\r\n+RESET\r\n" + NOAUTH),
        (b"QUIT\r\n", b"+OK\r\n"),
    ],
)
def test_with_a_password_a_connection_is_answered_as_redis_with_requirepass(
    start_server, request_, reply
) -> None:
    server = start_server(access=SECURED)
    Raw(server.port).send(request_).expect(reply)


@pytest.mark.parametrize(
    ("request_", "reply", "fetches"),
    [
        (b"GET k\r\n", b"$1\r\nv\r\n", 1),
        (b"GET secret\r\n", NOPERM, 0),
        (b"GET k\r\nGET secret\r\nGET k\r\n", b"$1\r\nv\r\n" + NOPERM + b"$1\r\nv\r\n", 1),
        (b"MGET k fresh\r\n", b"*2\r\n$1\r\nv\r\n$13\r\nfetched:fresh\r\n", 2),
        (b"MGET k secret fresh\r\n", NOPERM, 0),  # refused whole, as Redis's ACL does
    ],
)
def test_keys_outside_key_patterns_are_refused_and_never_fetched(
    start_server, fetch, request_, reply, fetches
) -> None:
    server = start_server(access=Access("", ("k", "f*"), protected=False))
    Raw(server.port).send(request_).expect(reply)
    assert fetch.calls == fetches


def test_redis_py_and_its_password_options_work(start_server) -> None:
    server = start_server(access=SECURED)
    for user in (None, "default"):
        for protocol in (2, 3):
            client = redis.Redis(
                port=server.port, protocol=protocol, username=user, password="s3cret"
            )
            assert client.get("k") == b"v"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port, password="wrong").get("k")
    assert SECURED.refusals["resp", "wrong_password"] >= 1
