"""What clients send when they connect, answered as a standalone Redis would, truthfully for a
read-only caching proxy: HELLO, AUTH, CLIENT, SELECT, INFO, CONFIG GET, CLUSTER, READONLY.

Handlers are pure, as every command's (proxy/resp/commands.py has the table): each takes the
Session and the arguments and returns the encoded reply. What a client learns about the server
comes from `Session.server`, read when asked.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping

from proxy.resp import codec as wire
from proxy.resp.session import Session

SERVER_NAME = b"redis-cache-proxy"
SERVER_VERSION = b"0.1.0"
# The Redis release whose connect-time commands the proxy answers (HELLO 3, CLIENT SETINFO):
# INFO's redis_version, which clients read to choose what to send.
EMULATED_VERSION = "7.2.0"
OK = wire.simple("OK")
# Redis's own answers about authentication, word for word (clients match on them).
NOAUTH = wire.error("NOAUTH Authentication required.")
WRONGPASS = wire.error("WRONGPASS invalid username-password pair or user is disabled.")
NO_PASSWORD_SET = wire.error(
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
HELLO_NOAUTH = wire.error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select the "
    "RESP protocol version at the same time"
)
BAD_CLIENT_NAME = wire.error(
    "ERR Client names cannot contain spaces, newlines or special characters."
)
NO_CLUSTER = wire.error("ERR This instance has cluster support disabled")

# INFO's sections as Redis lays them out: each field's value is a constant here or a live
# value of the server (ServerView.info_fields). "keyspace" is written from the live `keys`.
INFO_SECTIONS: dict[str, tuple[str, ...]] = {
    "server": (
        "redis_version",
        "redis_mode",
        "server_name",
        "proxy_version",
        "arch_bits",
        "process_id",
        "tcp_port",
        "uptime_in_seconds",
        "uptime_in_days",
    ),
    "clients": ("connected_clients", "maxclients", "blocked_clients"),
    "memory": ("used_memory", "maxmemory", "maxmemory_policy"),
    "persistence": ("loading", "async_loading"),
    "stats": (
        "total_connections_received",
        "rejected_connections",
        "keyspace_hits",
        "keyspace_misses",
        "evicted_keys",
        "expired_keys",
    ),
    "replication": ("role", "connected_slaves"),
    "cluster": ("cluster_enabled",),
    "keyspace": (),
}
INFO_CONSTANTS: dict[str, int | str] = {
    "redis_version": EMULATED_VERSION,
    "redis_mode": "standalone",
    "server_name": SERVER_NAME.decode(),
    "proxy_version": SERVER_VERSION.decode(),
    "arch_bits": 64,
    "blocked_clients": 0,
    "maxmemory_policy": "allkeys-lru",
    "loading": 0,
    "async_loading": 0,
    "role": "master",
    "connected_slaves": 0,
    "cluster_enabled": 0,
}
# CONFIG GET's parameters that do not depend on the settings (ServerView.config has the rest).
CONFIG_CONSTANTS: dict[str, str] = {
    "maxmemory-policy": "allkeys-lru",
    "databases": "1",
    "cluster-enabled": "no",
    "save": "",
    "appendonly": "no",
}


def hello(session: Session, args: list[bytes]) -> bytes:
    protocol = session.protocol
    if args:
        version = wire.parse_integer(args[0])
        if version is None or version < 0:
            return wire.error("ERR Protocol version is not an integer or out of range")
        protocol = version
        if protocol not in (2, 3):
            return wire.error("NOPROTO unsupported protocol version")
    options = _hello_options(args[1:], session.name)
    if isinstance(options, bytes):
        return options
    credentials, name = options
    if credentials is not None and _login(session, *credentials) is not OK:
        return WRONGPASS
    if not session.authenticated:
        return HELLO_NOAUTH
    session.protocol, session.name = protocol, name
    return _server_info(session)


def _hello_options(
    options: list[bytes], name: bytes | None
) -> tuple[tuple[bytes, bytes] | None, bytes | None] | bytes:
    """HELLO's AUTH credentials and SETNAME name, or the error reply for a bad option."""
    credentials: tuple[bytes, bytes] | None = None
    while options:
        option = options[0].upper()
        if option == b"AUTH" and len(options) >= 3:
            credentials, options = (options[1], options[2]), options[3:]
        elif option == b"SETNAME" and len(options) >= 2:
            if not _valid_name(options[1]):
                return BAD_CLIENT_NAME
            name, options = options[1], options[2:]
        else:
            shown = options[0].decode(errors="backslashreplace")
            return wire.error(f"ERR Syntax error in HELLO option '{shown}'")
    return credentials, name


def _server_info(session: Session) -> bytes:
    fields = [
        (b"server", wire.bulk(SERVER_NAME)),
        (b"version", wire.bulk(SERVER_VERSION)),
        (b"proto", wire.integer(session.protocol)),
        (b"id", wire.integer(session.id)),
        (b"mode", wire.bulk(b"standalone")),
        (b"role", wire.bulk(b"master")),
        (b"modules", wire.array([])),
    ]
    return wire.mapping([(wire.bulk(key), value) for key, value in fields], session.protocol)


def _valid_name(name: bytes) -> bool:
    return all(33 <= byte <= 126 for byte in name)


def auth(session: Session, args: list[bytes]) -> bytes:
    """AUTH <password> or AUTH <user> <password>, as Redis answers them (the proxy's one
    user is `default`)."""
    if len(args) == 1 and not session.access.required:
        return NO_PASSWORD_SET
    return _login(session, args[0] if len(args) == 2 else None, args[-1])


def _login(session: Session, user: bytes | None, password: bytes) -> bytes:
    """Authenticate the session; a failure leaves it as it was, as in Redis."""
    if session.access.login(user, password):
        session.authenticated = True
        return OK
    session.access.refused("resp", "wrong_password", session.peer)
    return WRONGPASS


def select(session: Session, args: list[bytes]) -> bytes:
    index = wire.parse_integer(args[0])
    if index is None:
        return wire.error("ERR value is not an integer or out of range")
    if index != 0:
        return wire.error("ERR DB index is out of range (the proxy serves one database as 0)")
    return OK


def client(session: Session, args: list[bytes]) -> bytes:
    return _subcommand(b"client", CLIENT_SUBCOMMANDS, session, args)


def _subcommand(
    command: bytes, table: Mapping[bytes, tuple[int, Handler]], session: Session, args: list[bytes]
) -> bytes:
    """Dispatch on the subcommand, with Redis's errors for an unknown one or a wrong count."""
    sub = args[0].upper()
    if sub not in table:
        shown = args[0].decode(errors="backslashreplace")
        return wire.error(f"ERR unknown subcommand '{shown}'. Try {command.upper().decode()} HELP.")
    arity, handler = table[sub]
    count = len(args) - 1
    if count != arity and not (arity < 0 and count >= -arity):
        return wire.error(
            f"ERR wrong number of arguments for '{command.decode()}|{sub.lower().decode()}'"
        )
    return handler(session, args[1:])


def client_setinfo(session: Session, args: list[bytes]) -> bytes:
    option = args[0].upper()
    if option not in (b"LIB-NAME", b"LIB-VER"):
        return wire.error(f"ERR Unrecognized option '{args[0].decode(errors='replace')}'")
    if not _valid_name(args[1]):
        return wire.error(
            f"ERR {option.decode()} cannot contain spaces, newlines or special characters."
        )
    name, version = session.library
    session.library = (args[1], version) if option == b"LIB-NAME" else (name, args[1])
    return OK


def client_setname(session: Session, args: list[bytes]) -> bytes:
    if not _valid_name(args[0]):
        return BAD_CLIENT_NAME
    session.name = args[0] or None
    return OK


def client_getname(session: Session, args: list[bytes]) -> bytes:
    return wire.null(session.protocol) if session.name is None else wire.bulk(session.name)


def client_id(session: Session, args: list[bytes]) -> bytes:
    return wire.integer(session.id)


def client_info(session: Session, args: list[bytes]) -> bytes:
    """Redis's CLIENT INFO line, with the fields the proxy knows (no descriptor or buffers)."""
    name, version = session.library
    fields = [
        ("id", str(session.id)),
        ("addr", session.peer),
        ("laddr", session.local),
        ("name", (session.name or b"").decode()),
        ("age", str(int(time.monotonic() - session.connected_at))),
        ("idle", "0"),
        ("flags", "N"),
        ("db", "0"),
        ("sub", "0"),
        ("psub", "0"),
        ("ssub", "0"),
        ("multi", "-1"),
        ("watch", "0"),
        ("cmd", "client|info"),
        ("user", "default"),
        ("redir", "-1"),
        ("resp", str(session.protocol)),
        ("lib-name", name.decode()),
        ("lib-ver", version.decode()),
    ]
    line = " ".join(f"{field}={value}" for field, value in fields) + "\n"
    return wire.verbatim(line.encode(), session.protocol)


Handler = Callable[[Session, list[bytes]], bytes]
# name -> (arguments after the subcommand, negative for "at least"; handler)
CLIENT_SUBCOMMANDS: dict[bytes, tuple[int, Handler]] = {
    b"SETINFO": (2, client_setinfo),
    b"SETNAME": (1, client_setname),
    b"GETNAME": (0, client_getname),
    b"ID": (0, client_id),
    b"INFO": (0, client_info),
}


def info(session: Session, args: list[bytes]) -> bytes:
    """INFO [section ...]: Redis's layout and field names, with the proxy's own figures where
    Redis has a matching field (the README's RESP section lists them)."""
    asked = {arg.decode(errors="replace").lower() for arg in args} or {"default"}
    if asked & {"all", "everything", "default"}:
        asked = set(INFO_SECTIONS)
    fields = {**INFO_CONSTANTS, **session.server.info_fields()}
    sections = [_info_section(name, fields) for name in INFO_SECTIONS if name in asked]
    return wire.verbatim("\r\n".join(sections).encode(), session.protocol)


def _info_section(name: str, fields: Mapping[str, int | str]) -> str:
    lines = [f"# {name.capitalize()}"]
    lines += [f"{field}:{fields[field]}" for field in INFO_SECTIONS[name]]
    if name == "keyspace" and fields["keys"]:
        lines.append(f"db0:keys={fields['keys']},expires={fields['keys']},avg_ttl=0")
    return "".join(line + "\r\n" for line in lines)


def config(session: Session, args: list[bytes]) -> bytes:
    return _subcommand(b"config", CONFIG_SUBCOMMANDS, session, args)


def config_get(session: Session, args: list[bytes]) -> bytes:
    """CONFIG GET pattern [pattern ...]: the parameters the proxy has that match (Redis's
    glob, any case), each once; an empty map when none does, as Redis answers."""
    patterns = [arg.decode(errors="replace").lower() for arg in args]
    found = [
        (wire.bulk(name.encode()), wire.bulk(value.encode()))
        for name, value in {**CONFIG_CONSTANTS, **session.server.config()}.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    ]
    return wire.mapping(found, session.protocol)


CONFIG_SUBCOMMANDS: dict[bytes, tuple[int, Handler]] = {b"GET": (-1, config_get)}


def no_cluster(session: Session, args: list[bytes]) -> bytes:
    """CLUSTER ..., READONLY, READWRITE: what a Redis without cluster support answers."""
    return NO_CLUSTER
