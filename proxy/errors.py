"""The proxy's typed errors: how a request (or a RESP connection) ends when it fails.

Each front end maps them to answers in one table."""

from __future__ import annotations


class ProxyError(Exception):
    """Base of the errors a request can end with; the message is safe to show a client."""


class InvalidKey(ProxyError):
    """The key is unusable (empty)."""


class KeyTooLong(InvalidKey):
    """The key is longer than the proxy accepts."""


class AccessDenied(ProxyError):
    """The client may not read this (proxy/access.py)."""

    reason = ""  # the reason label of proxy_access_refusals_total


class AuthRequired(AccessDenied):
    """PROXY_PASSWORD is set and the client has not given it."""

    reason = "no_password"

    def __init__(self) -> None:
        super().__init__("authentication required: send the proxy's password")


class WrongPassword(AccessDenied):
    """The client gave a password (or user) that is not the proxy's."""

    reason = "wrong_password"

    def __init__(self) -> None:
        super().__init__("invalid username-password pair")


class ForbiddenKey(AccessDenied):
    """The key is outside KEY_PATTERNS: it is never fetched."""

    reason = "forbidden_key"

    def __init__(self) -> None:
        super().__init__("the key is outside the proxy's KEY_PATTERNS")


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
