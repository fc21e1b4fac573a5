"""How each setting's text becomes a value, and the text helpers settings are shown with.

Each parser takes the variable's text and returns the value or raises ValueError; the table in
proxy/config/__init__.py names which variable uses which.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def seconds_or_zero(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise ValueError(text)
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(text)
        return text.lower()

    return parse


def host_name(text: str) -> str:
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise ValueError(text)
    return text


def redis_url(text: str) -> str:
    parts = urlsplit(text)
    _ = parts.port  # raises ValueError on a port that is not a number in range
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return text
    if parts.scheme == "unix" and parts.path:
        return text
    raise ValueError(text)


def sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port[,host:port...]` (IPv6 hosts bracketed); empty: no Sentinel."""
    found = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        address, _, port = part.rpartition(":")
        address = address.removeprefix("[").removesuffix("]")
        number = int(port)
        if not address or not 1 <= number <= 65535:
            raise ValueError(text)
        found.append((host_name(address), number))
    return tuple(found)


def password(text: str) -> str:
    """A password clients can send as they are, in an HTTP header and a RESP argument alike:
    visible ASCII, no spaces; empty for none."""
    if len(text) > 1024 or any(not "!" <= c <= "~" for c in text):
        raise ValueError("not a usable password")  # never the text: it is a secret
    return text


def readable_file(text: str) -> str:
    """A path this process can read, or empty."""
    if text and not (os.path.isfile(text) and os.access(text, os.R_OK)):
        raise ValueError(text)
    return text


def yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no"):
        raise ValueError(text)
    return text.lower() == "yes"


def key_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated glob patterns (Redis ACL syntax), at least one."""
    found = tuple(filter(None, (piece.strip() for piece in text.split(","))))
    if not found:
        raise ValueError(text)
    return found


def is_loopback_host(host: str) -> bool:
    """Does an address to listen on stay on this host (localhost, 127.0.0.0/8, ::1)?"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond loopback


def no_spaces(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError(text)
    return text


# A URL's password, in the userinfo (`//user:secret@`) or the query (`?password=secret`), as
# redis-py reads both; matched as text so that a URL too broken to parse is redacted too.
URL_PASSWORDS = (
    (re.compile(r"(//[^/?#@]*?:)[^/?#]*@"), r"\1***@"),
    (re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE), r"\1***"),
)


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 literal bracketed (as Gunicorn's `bind` and Redis write it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    for pattern, replacement in URL_PASSWORDS:
        url = pattern.sub(replacement, url)
    return url


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse `KEY=VALUE` lines; comments, blank lines, `export` and quotes are allowed."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        return {}
    pairs: dict[str, str] = {}
    for line in lines:
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        pairs[key.strip()] = value
    return pairs
