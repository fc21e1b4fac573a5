"""The RESP commands the proxy answers: one table from name to handler, arity and flags.

Everything else, writes included, gets Redis's own "unknown command" error and the connection
stays open: this is a read-only proxy, writes go straight to the backing Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy import resp_codec as wire
from proxy.errors import WrongType
from proxy.metrics import read_outcome

if TYPE_CHECKING:
    from proxy.resp_connection import Connection

SERVER_NAME = b"redis-cache-proxy"
SERVER_VERSION = b"0.1.0"
OK = wire.simple("OK")
AUTH_REFUSED = wire.error(
    "ERR AUTH is not supported: redis-cache-proxy has no users or passwords; "
    "connect without credentials"
)
BAD_CLIENT_NAME = wire.error(
    "ERR Client names cannot contain spaces, newlines or special characters."
)

Handler = Callable[["Connection", list[bytes]], "bytes | None"]


@dataclass(frozen=True)
class Spec:
    handler: Handler
    min_args: int
    max_args: int
    flags: tuple[str, ...]
    keys: tuple[int, int, int] = (0, 0, 0)  # first key, last key, step (COMMAND INFO)

    @property
    def arity(self) -> int:
        """Redis's arity: counts the name; negative means "at least"."""
        fixed = self.min_args == self.max_args
        return self.min_args + 1 if fixed else -(self.min_args + 1)


def get(conn: Connection, args: list[bytes]) -> None:
    # Hits were answered by the connection's fast path; this is a miss: fetch off the loop.
    key, protocol = args[0], conn.protocol

    def render(found: tuple[bytes | None, bool]) -> tuple[bytes, str]:
        value, hit = found
        return wire.bulk_or_null(value, protocol), read_outcome(value, hit)

    conn.fetch(lambda: conn.cache.lookup(key), render)


def mget(conn: Connection, args: list[bytes]) -> None:
    protocol = conn.protocol

    def fetch_all() -> list[tuple[bytes | None, bool]]:
        return [_string_or_none(conn, key) for key in args]

    def render(found: list[tuple[bytes | None, bool]]) -> tuple[bytes, str]:
        values = [value for value, _ in found]
        outcome = "hit" if all(hit for _, hit in found) else "miss"
        if all(value is None for value in values):
            outcome = "not_found"
        return wire.array([wire.bulk_or_null(value, protocol) for value in values]), outcome

    conn.fetch(fetch_all, render)


def _string_or_none(conn: Connection, key: bytes) -> tuple[bytes | None, bool]:
    try:
        return conn.cache.lookup(key)
    except WrongType:
        return None, False  # MGET answers nil for a key of another type, as Redis does


def ping(conn: Connection, args: list[bytes]) -> bytes:
    return wire.bulk(args[0]) if args else wire.simple("PONG")


def echo(conn: Connection, args: list[bytes]) -> bytes:
    return wire.bulk(args[0])


def hello(conn: Connection, args: list[bytes]) -> bytes:
    protocol, name, options = conn.protocol, conn.name, args
    if args:
        if not args[0].isdigit():
            return wire.error("ERR Protocol version is not an integer or out of range")
        protocol, options = int(args[0]), args[1:]
        if protocol not in (2, 3):
            return wire.error("NOPROTO unsupported protocol version")
    while options:
        option = options[0].upper()
        if option == b"AUTH" and len(options) >= 3:
            return AUTH_REFUSED
        if option == b"SETNAME" and len(options) >= 2:
            if not _valid_name(options[1]):
                return BAD_CLIENT_NAME
            name, options = options[1], options[2:]
            continue
        shown = options[0].decode(errors="backslashreplace")
        return wire.error(f"ERR Syntax error in HELLO option '{shown}'")
    conn.protocol, conn.name = protocol, name
    return _server_info(conn)


def _server_info(conn: Connection) -> bytes:
    fields = [
        (b"server", wire.bulk(SERVER_NAME)),
        (b"version", wire.bulk(SERVER_VERSION)),
        (b"proto", wire.integer(conn.protocol)),
        (b"id", wire.integer(conn.id)),
        (b"mode", wire.bulk(b"standalone")),
        (b"role", wire.bulk(b"master")),
        (b"modules", wire.array([])),
    ]
    return wire.mapping([(wire.bulk(key), value) for key, value in fields], conn.protocol)


def _valid_name(name: bytes) -> bool:
    return all(33 <= byte <= 126 for byte in name)


def auth(conn: Connection, args: list[bytes]) -> bytes:
    return AUTH_REFUSED


def client(conn: Connection, args: list[bytes]) -> bytes:
    sub = args[0].upper()
    if sub not in CLIENT_SUBCOMMANDS:
        shown = args[0].decode(errors="backslashreplace")
        return wire.error(f"ERR unknown subcommand '{shown}'. Try CLIENT HELP.")
    arity, handler = CLIENT_SUBCOMMANDS[sub]
    if len(args) - 1 != arity:
        return wire.error(f"ERR wrong number of arguments for 'client|{sub.lower().decode()}'")
    return handler(conn, args[1:])


def client_setinfo(conn: Connection, args: list[bytes]) -> bytes:
    if args[0].upper() not in (b"LIB-NAME", b"LIB-VER"):
        return wire.error(f"ERR Unrecognized option '{args[0].decode(errors='replace')}'")
    return OK


def client_setname(conn: Connection, args: list[bytes]) -> bytes:
    if not _valid_name(args[0]):
        return BAD_CLIENT_NAME
    conn.name = args[0] or None
    return OK


def client_getname(conn: Connection, args: list[bytes]) -> bytes:
    return wire.bulk_or_null(conn.name, conn.protocol)


def client_id(conn: Connection, args: list[bytes]) -> bytes:
    return wire.integer(conn.id)


CLIENT_SUBCOMMANDS: dict[bytes, tuple[int, Callable[[Connection, list[bytes]], bytes]]] = {
    b"SETINFO": (2, client_setinfo),
    b"SETNAME": (1, client_setname),
    b"GETNAME": (0, client_getname),
    b"ID": (0, client_id),
}


def select(conn: Connection, args: list[bytes]) -> bytes:
    if not args[0].removeprefix(b"-").isdigit():
        return wire.error("ERR value is not an integer or out of range")
    if int(args[0]) != 0:
        return wire.error("ERR DB index is out of range (the proxy serves one database as 0)")
    return OK


def command(conn: Connection, args: list[bytes]) -> bytes:
    if not args:
        return wire.array([_command_info(name) for name in COMMANDS])
    sub = args[0].upper()
    if sub == b"COUNT":
        return wire.integer(len(COMMANDS))
    if sub == b"LIST":
        return wire.array([wire.bulk(name) for name in COMMANDS])
    if sub == b"INFO":
        names = [name.lower() for name in args[1:]]
        return wire.array(
            [
                _command_info(name) if name in COMMANDS else wire.null(conn.protocol)
                for name in names
            ]
        )
    if sub == b"DOCS":
        return wire.mapping([], conn.protocol)  # no docs: redis-cli falls back to its own
    shown = args[0].decode(errors="backslashreplace")
    return wire.error(f"ERR unknown subcommand '{shown}'. Try COMMAND HELP.")


def _command_info(name: bytes) -> bytes:
    spec = COMMANDS[name]
    first, last, step = spec.keys
    flags = wire.array([wire.simple(flag) for flag in spec.flags])
    numbers = [wire.integer(n) for n in (first, last, step)]
    return wire.array([wire.bulk(name), wire.integer(spec.arity), flags, *numbers])


def quit_(conn: Connection, args: list[bytes]) -> bytes:
    conn.quitting = True
    conn.queue.clear()  # nothing after QUIT is answered
    return OK


def reset(conn: Connection, args: list[bytes]) -> bytes:
    conn.protocol, conn.name = 2, None
    return wire.simple("RESET")


def unknown_command(command: list[bytes]) -> bytes:
    """Redis's wording, with up to 128 characters of the arguments."""
    shown = ""
    for arg in command[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{arg.decode(errors='backslashreplace')[: 128 - len(shown)]}' "
    name = command[0].decode(errors="backslashreplace")[:128]
    return wire.error(f"ERR unknown command '{name}', with args beginning with: {shown}")


MANY = 1 << 30
COMMANDS: dict[bytes, Spec] = {
    b"get": Spec(get, 1, 1, ("readonly", "fast"), (1, 1, 1)),
    b"mget": Spec(mget, 1, MANY, ("readonly", "fast"), (1, -1, 1)),
    b"ping": Spec(ping, 0, 1, ("fast",)),
    b"echo": Spec(echo, 1, 1, ("fast",)),
    b"hello": Spec(hello, 0, MANY, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"auth": Spec(auth, 1, 2, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"client": Spec(client, 1, MANY, ("noscript", "loading", "stale")),
    b"select": Spec(select, 1, 1, ("loading", "stale", "fast")),
    b"command": Spec(command, 0, MANY, ("loading", "stale")),
    b"quit": Spec(quit_, 0, MANY, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"reset": Spec(reset, 0, 0, ("noscript", "loading", "stale", "fast", "no_auth")),
}
