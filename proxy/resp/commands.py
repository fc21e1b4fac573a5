"""The RESP commands the proxy answers: one table from name to handler, arity and flags.

Handlers are pure: each takes the connection's Session and the command's arguments and returns
a Result (a reply; a Deferred read that must run off the event loop; or Close). The connection
writes, defers and closes. Everything else, writes included, gets Redis's own "unknown command"
error and the connection stays open: this is a read-only proxy, writes go to the backing Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from proxy.cache import Read, ReadThroughCache
from proxy.errors import (
    AccessDenied,
    AuthRequired,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidKey,
    ProxyError,
    WrongPassword,
    WrongType,
)
from proxy.resp import codec as wire
from proxy.resp import handshake
from proxy.resp.session import Session

T = TypeVar("T")


# The error map: a typed error -> the RESP error line. `{}` is the error's own message.
ERROR_MAP: dict[type[ProxyError], str] = {
    AuthRequired: "NOAUTH Authentication required.",
    WrongPassword: "WRONGPASS invalid username-password pair or user is disabled.",
    AccessDenied: "NOPERM No permissions to access a key",
    WrongType: "WRONGTYPE Operation against a key holding the wrong kind of value",
    BackendTimeout: "TRYAGAIN {}",
    BackendUnavailable: "TRYAGAIN {}",
    BackendError: "ERR backend: {}",
    InvalidKey: "ERR {}",
}


def error_reply(exc: ProxyError) -> bytes:
    template = next(ERROR_MAP[cls] for cls in type(exc).__mro__ if cls in ERROR_MAP)
    return wire.error(template.format(exc))


@dataclass(frozen=True)
class Deferred(Generic[T]):
    """A read that may wait on Redis: `work` runs off the loop over the cache; `render` turns
    its result into the replies and the outcome counted in metrics; `requests`: how many
    commands it answers (a run of GETs: one reply each, an error once for each)."""

    work: Callable[[ReadThroughCache], T]
    render: Callable[[T], tuple[wire.Pieces, str]]
    requests: int = 1


@dataclass(frozen=True)
class Close:
    """Answer `reply`, drop whatever the client sent after it, and close (QUIT)."""

    reply: bytes


Result = bytes | Deferred[Any] | Close
Handler = Callable[[Session, list[bytes]], Result]


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


NOPERM = wire.error("NOPERM No permissions to access a key")
NIL = Read(None, False)  # an MGET's answer for a key of another type


def execute(session: Session, command: list[bytes]) -> Result:
    """The result of one command that is not a GET answered from the queue (see read_key).
    Checked in Redis's order: the name, the arity, then authentication."""
    name = command[0].lower()
    spec = COMMANDS.get(name)
    if spec is None:
        return unknown_command(command)
    if not spec.min_args <= len(command) - 1 <= spec.max_args:
        return wire.error(f"ERR wrong number of arguments for '{name.decode()}' command")
    if not session.authenticated and "no_auth" not in spec.flags:
        session.access.refused("resp", "no_password", session.peer)
        return handshake.NOAUTH
    return spec.handler(session, command[1:])


def _forbidden(session: Session, keys: list[bytes]) -> bool:
    """Is any key outside KEY_PATTERNS? (Counted: the command is refused whole, as Redis's
    ACL refuses a command naming one key it may not read.)"""
    allowed = session.access.key_allowed
    if allowed is None or all(map(allowed, keys)):
        return False
    session.access.refused("resp", "forbidden_key", session.peer)
    return True


def read_key(protocol: int, key: bytes) -> Deferred[Read]:
    """A GET whose key a peek did not find: look it up off the loop (it may go to Redis)."""

    def render(found: Read) -> tuple[wire.Pieces, str]:
        return wire.bulk_or_null(found.value, protocol), found.outcome

    return Deferred(lambda cache: cache.lookup(key), render)


def read_keys(protocol: int, keys: list[bytes]) -> Deferred[list[Read | BackendError]]:
    """A run of pipelined GETs the peek stopped at: looked up together off the loop (their
    misses in one round trip), a reply each: its value, or the error a GET of it would get
    (WRONGTYPE for a key of another type; on a cluster, its node's failure)."""

    def render(found: list[Read | BackendError]) -> tuple[wire.Pieces, str]:
        pieces: wire.Pieces = []
        for read in found:
            if isinstance(read, BackendError):
                pieces.append(error_reply(read))
            else:
                pieces += wire.bulk_or_null(read.value, protocol)
        return pieces, _outcome([read for read in found if not isinstance(read, BackendError)])

    return Deferred(lambda cache: cache.lookup_many(keys), render, len(keys))


def _outcome(found: list[Read]) -> str:
    """One outcome for many reads (an MGET, a run of GETs): not_found if none had a value,
    hit if all were hits, else miss."""
    if all(read.value is None for read in found):
        return "not_found"
    return "hit" if all(read.hit for read in found) else "miss"


def get(session: Session, args: list[bytes]) -> Deferred[Read] | bytes:
    if _forbidden(session, args):
        return NOPERM
    return read_key(session.protocol, args[0])


def mget(session: Session, args: list[bytes]) -> Deferred[list[Read]] | bytes:
    if _forbidden(session, args):
        return NOPERM
    protocol = session.protocol

    def read_all(cache: ReadThroughCache) -> list[Read]:
        # the misses in one round trip to Redis; a key of another type is nil, as in Redis;
        # a key whose cluster node failed fails the whole MGET, as Redis cannot answer it
        found = cache.lookup_many(args)
        for read in found:
            if isinstance(read, BackendError) and not isinstance(read, WrongType):
                raise read
        return [read if isinstance(read, Read) else NIL for read in found]

    def render(found: list[Read]) -> tuple[wire.Pieces, str]:
        pieces = [b"*%d\r\n" % len(found)]
        for read in found:  # values by reference: an MGET of a large value N times is no copy
            pieces += wire.bulk_or_null(read.value, protocol)
        return pieces, _outcome(found)

    return Deferred(read_all, render)


def ping(session: Session, args: list[bytes]) -> bytes:
    return wire.bulk(args[0]) if args else wire.simple("PONG")


def echo(session: Session, args: list[bytes]) -> bytes:
    return wire.bulk(args[0])


def command(session: Session, args: list[bytes]) -> bytes:
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
                _command_info(name) if name in COMMANDS else wire.null(session.protocol)
                for name in names
            ]
        )
    if sub == b"DOCS":
        return wire.mapping([], session.protocol)  # no docs: redis-cli falls back to its own
    shown = args[0].decode(errors="backslashreplace")
    return wire.error(f"ERR unknown subcommand '{shown}'. Try COMMAND HELP.")


def _command_info(name: bytes) -> bytes:
    spec = COMMANDS[name]
    first, last, step = spec.keys
    flags = wire.array([wire.simple(flag) for flag in spec.flags])
    numbers = [wire.integer(n) for n in (first, last, step)]
    return wire.array([wire.bulk(name), wire.integer(spec.arity), flags, *numbers])


def quit_(session: Session, args: list[bytes]) -> Close:
    return Close(handshake.OK)


def reset(session: Session, args: list[bytes]) -> bytes:
    """As Redis: back to RESP2, no name, and not authenticated if a password is set."""
    session.protocol, session.name = 2, None
    session.authenticated = not session.access.required
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
    b"hello": Spec(handshake.hello, 0, MANY, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"auth": Spec(handshake.auth, 1, 2, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"client": Spec(handshake.client, 1, MANY, ("noscript", "loading", "stale")),
    b"select": Spec(handshake.select, 1, 1, ("loading", "stale", "fast")),
    b"info": Spec(handshake.info, 0, MANY, ("loading", "stale")),
    b"config": Spec(handshake.config, 1, MANY, ("admin", "noscript", "loading", "stale")),
    b"cluster": Spec(handshake.no_cluster, 1, MANY, ()),
    b"readonly": Spec(handshake.no_cluster, 0, 0, ("loading", "stale", "fast")),
    b"readwrite": Spec(handshake.no_cluster, 0, 0, ("loading", "stale", "fast")),
    b"command": Spec(command, 0, MANY, ("loading", "stale")),
    b"quit": Spec(quit_, 0, MANY, ("noscript", "loading", "stale", "fast", "no_auth")),
    b"reset": Spec(reset, 0, 0, ("noscript", "loading", "stale", "fast", "no_auth")),
}
