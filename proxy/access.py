"""Who may read what: the client password, protected mode, and the key allowlist.

Both front ends ask one Access, built once from the settings, so HTTP and RESP hold the same
rules: a password (PROXY_PASSWORD) compared in constant time; protected mode, which refuses
clients from other hosts when the proxy listens beyond loopback with no password (as Redis's
`protected-mode`); and KEY_PATTERNS, globs with Redis ACL key-pattern semantics, outside
which a key is never fetched. Refusals are counted (for /metrics) and logged at most once per
interval each: a client guessing passwords must not flood the log.
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable

from proxy.errors import AuthRequired, ForbiddenKey, WrongPassword
from proxy.logs import RateLimitedLog

log = logging.getLogger(__name__)

# The one user the proxy knows, by Redis's name for it (AUTH default <password>).
DEFAULT_USER = b"default"
PROTECTED_MODE_MESSAGE = (
    "redis-cache-proxy is running in protected mode because protected mode is enabled and no "
    "password is set. In this mode connections are only accepted from the loopback interface. "
    "If you want to connect from external computers to the proxy you may adopt one of the "
    "following solutions: 1) Set a password with PROXY_PASSWORD (or PROXY_PASSWORD_FILE) and "
    "have clients authenticate. 2) Disable protected mode with PROTECTED_MODE=no, but MAKE "
    "SURE the proxy is not publicly accessible from the internet if you do so. Restart the "
    "proxy after either change."
)


class Access:
    """The password, protected mode and key allowlist one proxy enforces on every front end."""

    def __init__(self, password: str, patterns: tuple[str, ...], protected: bool) -> None:
        self._password = password.encode() if password else None
        self.required = self._password is not None  # clients must authenticate
        self.protected = protected  # clients from other hosts are refused
        # None: every key may be read (KEY_PATTERNS=*), and no check is made.
        self.key_allowed: Callable[[bytes], bool] | None = key_matcher(patterns)
        self.refusals: Counter[tuple[str, str]] = Counter()  # (protocol, reason) -> count
        self._lock = threading.Lock()  # HTTP refusals are counted from pool threads
        self._warnings = RateLimitedLog(log)

    @classmethod
    def open(cls) -> Access:
        """No password, every key, no protected mode: what a proxy on loopback starts with."""
        return cls("", ("*",), protected=False)

    def login(self, user: bytes | None, password: bytes) -> bool:
        """Redis's AUTH: the password alone, or with the user `default`; always true when no
        password is set and the user is `default` (as Redis's `nopass` default user)."""
        if self._password is None:
            return user == DEFAULT_USER
        matches = hmac.compare_digest(password, self._password)
        return matches and user in (None, DEFAULT_USER)

    def authorizes(self, header: str | bytes | None) -> bool:
        """Does an HTTP `Authorization` value carry the password? `Bearer <password>`, or
        `Basic` with the user `default` or none. True whenever no password is set."""
        if self._password is None:
            return True
        if not header:
            return False
        raw = header.encode("latin-1") if isinstance(header, str) else header
        scheme, _, credentials = raw.strip().partition(b" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == b"bearer":
            return hmac.compare_digest(credentials, self._password)
        if scheme == b"basic":
            user, password = _basic(credentials)
            return self.login(user or None, password)
        return False

    def check_http(self, header: str | None) -> None:
        """Raise the typed error for an HTTP request that does not carry the password."""
        if not self.authorizes(header):
            raise AuthRequired() if not header else WrongPassword()

    def check_key(self, key: bytes) -> None:
        """Raise ForbiddenKey for a key outside KEY_PATTERNS."""
        if self.key_allowed is not None and not self.key_allowed(key):
            raise ForbiddenKey()

    def admits(self, peer: object) -> bool:
        """May a client at `peer` (a socket address) connect? Not from another host while
        protected mode is in force."""
        return not self.protected or is_loopback_peer(peer)

    def refused(self, protocol: str, reason: str, peer: object = None) -> None:
        """Count a refusal; log it, at most once per interval for each kind."""
        with self._lock:
            self.refusals[protocol, reason] += 1
        host = _host(peer) or "?"
        self._warnings.warn(
            "%s client %s refused: %s", protocol.upper(), host, reason, kind=protocol + reason
        )


def _basic(credentials: bytes) -> tuple[bytes, bytes]:
    """(user, password) of a Basic credential; two empty strings if it does not decode."""
    try:
        decoded = binascii.a2b_base64(credentials, strict_mode=True)
    except binascii.Error:
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


def _host(peer: object) -> object:
    """The host of a socket address (a tuple), or `peer` itself (a host already, or None)."""
    return peer[0] if isinstance(peer, tuple) and peer else peer


def is_loopback_peer(peer: object) -> bool:
    """Is a socket address on this host's loopback (127.0.0.0/8, ::1, or v4-mapped)?"""
    host = _host(peer)
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def key_matcher(patterns: tuple[str, ...]) -> Callable[[bytes], bool] | None:
    """A test for keys matching any of `patterns` (Redis glob syntax); None if one is `*`."""
    if not patterns or "*" in patterns:
        return None
    union = b"|".join(glob_regex(pattern.encode()) for pattern in patterns)
    # (?=.): Redis's matcher never matches an empty key (its loop needs a byte to start),
    # whatever the pattern, but for the `*` of all keys, which is not checked at all.
    return re.compile(b"(?=.)(?:" + union + b")", re.DOTALL).fullmatch  # type: ignore[return-value]


def glob_regex(pattern: bytes) -> bytes:
    """A regular expression that matches what Redis's stringmatchlen() matches for `pattern`:
    `*`, `?`, `[...]` with `^`, ranges and `\\` escapes, `\\` escaping any byte; an unclosed
    `[` class ends with the pattern, as it does in Redis."""
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i : i + 1]
        if char == b"*":
            out.append(b".*")
        elif char == b"?":
            out.append(b".")
        elif char == b"[":
            regex, i = _glob_class(pattern, i + 1)
            out.append(regex)
            continue
        else:
            if char == b"\\" and i + 1 < n:
                i += 1
            out.append(re.escape(pattern[i : i + 1]))
        i += 1
    return b"".join(out)


def _glob_class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """The regex for a `[...]` class starting at `pattern[i]` (after `[`), and where the
    pattern goes on, following stringmatchlen()'s loop step by step."""
    n = len(pattern)
    negate = pattern[i : i + 1] == b"^"
    i += negate
    ranges: list[tuple[int, int]] = []
    while i < n and pattern[i : i + 1] != b"]":
        if pattern[i : i + 1] == b"\\" and i + 1 < n:
            i += 1
            ranges.append((pattern[i], pattern[i]))
        elif n - i >= 3 and pattern[i + 1 : i + 2] == b"-":
            low, high = sorted((pattern[i], pattern[i + 2]))
            ranges.append((low, high))
            i += 2
        else:
            ranges.append((pattern[i], pattern[i]))
        i += 1
    items = b"".join(b"\\x%02x-\\x%02x" % pair for pair in ranges)
    if not items:
        return (b"." if negate else b"(?!)"), i + 1
    return b"[" + (b"^" if negate else b"") + items + b"]", i + 1
