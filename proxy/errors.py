"""The proxy's typed errors: how a request (or a RESP connection) ends when it fails.

Each front end maps them to answers in one table."""

from __future__ import annotations


class ProxyError(Exception):
    """Base of the errors a request can end with; the message is safe to show a client."""


class InvalidKey(ProxyError):
    """The key is unusable (empty)."""


class KeyTooLong(InvalidKey):
    """The key is longer than the proxy accepts."""


class BackendError(ProxyError):
    """The backing Redis could not answer; subclasses say how (`kind` labels metrics)."""

    kind = "other"


class BackendUnavailable(BackendError):
    """Redis refused, dropped the connection, is loading, or rejected our credentials."""

    kind = "unavailable"


class BackendTimeout(BackendError):
    """Redis did not answer within REDIS_TIMEOUT."""

    kind = "timeout"


class WrongType(BackendError):
    """The key holds a value that is not a string (a list, hash, ...), so GET cannot read it."""

    kind = "wrong_type"


class BackendRejected(BackendError):
    """Redis answered the GET with an error other than WRONGTYPE (ACL, OOM, ...)."""

    kind = "rejected"


class ProtocolError(Exception):
    """A RESP client sent a malformed frame; the connection is answered and then closed.

    Not a ProxyError: it ends a connection, not a request, and never reaches HTTP.
    `commands_before` holds the complete commands that preceded the bad frame: Redis
    answers those before the error.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.commands_before: list[list[bytes]] = []
