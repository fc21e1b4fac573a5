"""Where an HTTP/1.x request ends in the bytes read so far, and whether it is a plain `/get/` read.

The worker's event loop reads every HTTP connection itself, so that no pool thread ever waits
for a client (proxy/http/loop.py). From the bytes it holds it needs two answers: is a whole request
there yet, and is it a request the loop may answer from the cache itself (proxy/http/onloop.py).
Both answers err on one side. A request whose framing this module is not sure of is handed to
Gunicorn with everything read so far, and the connection closes after Gunicorn's answer. A
request is *canonical* only if Gunicorn would parse it to exactly the same method, target,
version and keep-alive decision, with no header that changes Gunicorn's or Flask's answer;
anything else goes to Gunicorn's parser, which stays the judge of everything unusual.
"""

from __future__ import annotations

import re
from typing import NamedTuple

HEAD_END = b"\r\n\r\n"
# A head not complete after this many bytes goes to Gunicorn as it is (which answers 414, 431 or
# 400): a real client's head is a few hundred bytes, and the loop holds it in memory per client.
MAX_HEAD_BYTES = 65536
# The proxy's routes read no body; a longer one is not waited for (handed over as it is).
MAX_BODY_BYTES = 65536
# Gunicorn's own limits (limit_request_line, limit_request_field_size, limit_request_fields): a
# canonical head stays within all of them.
MAX_CANONICAL_HEAD = 8190
MAX_FIELDS = 100

# Header blocks already checked (see _header_block); the result is a pure function of the bytes.
MAX_REMEMBERED_BLOCKS = 256
MAX_REMEMBERED_BLOCK = 1024
_UNSEEN = object()
_SEEN_BLOCKS: dict[bytes, tuple[bytes, bytes] | None] = {}

REQUEST_LINE = re.compile(rb"(GET|HEAD) (/get/[\x21\x22\x24-\x7e]*) HTTP/1\.([01])\r\n")
FIELD = re.compile(rb"([!#$%&'*+\-.^`|~0-9A-Za-z]+):([^\x00-\x08\x0a-\x1f\x7f]*)")
# Fields that change how Gunicorn frames or answers a request (body, 100-continue, upgrade to
# HTTP/2, the URL scheme from a trusted proxy, singleton checks): never on the loop.
NOT_CANONICAL = frozenset(
    (
        b"CONTENT-LENGTH",
        b"TRANSFER-ENCODING",
        b"EXPECT",
        b"UPGRADE",
        b"HTTP2-SETTINGS",
        b"CONTENT-TYPE",
        b"X-FORWARDED-PROTO",
        b"X-FORWARDED-PROTOCOL",
        b"X-FORWARDED-SSL",
    )
)


class Canonical(NamedTuple):
    """A canonical `GET`/`HEAD /get/...` request, as Gunicorn would parse it."""

    method: str  # "GET" or "HEAD"
    target: str  # the raw request target, e.g. "/get/a%2Fb"
    version: bytes  # b"1.0" or b"1.1", echoed in the status line as Gunicorn does
    keep_alive: bool  # Gunicorn's Request.should_close(), negated
    authorization: bytes = b""  # the Authorization field's value (there is at most one)


class Framed(NamedTuple):
    """One request found in a buffer."""

    end: int  # offset just past the request (head and body)
    exact: bool  # False: the framing is uncertain; hand over all that was read, then close
    canonical: Canonical | None
    oversized: bool = False  # the head did not end within MAX_HEAD_BYTES


def scan(buf: bytes | bytearray, pos: int = 0) -> Framed | None:
    """The request that starts at `buf[pos]`, or None while more bytes are needed for it."""
    head_end = buf.find(HEAD_END, pos, pos + MAX_HEAD_BYTES)
    if head_end < 0:
        if len(buf) - pos >= MAX_HEAD_BYTES:
            return Framed(len(buf), False, None, oversized=True)
        return None
    body_at = head_end + len(HEAD_END)
    head = bytes(buf[pos:head_end])
    canonical = _canonical(head)
    if canonical is not None:
        return Framed(body_at, True, canonical)
    length = _body_length(head)
    if length is None or length > MAX_BODY_BYTES:
        return Framed(len(buf), False, None)
    if len(buf) < body_at + length:
        return None
    return Framed(body_at + length, True, None)


def _canonical(head: bytes) -> Canonical | None:
    if len(head) > MAX_CANONICAL_HEAD:
        return None
    line = REQUEST_LINE.match(head + b"\r\n")
    if line is None:
        return None
    plain = _header_block(head[line.end() :])
    if plain is None:
        return None
    connection, authorization = plain
    minor = line[3]
    if connection == b"close":
        keep_alive = False
    elif connection == b"keep-alive":
        keep_alive = True
    else:
        keep_alive = minor == b"1"
    method, target = line[1].decode(), line[2].decode("ascii")
    return Canonical(method, target, b"1." + minor, keep_alive, authorization)


def _header_block(block: bytes) -> tuple[bytes, bytes] | None:
    """_plain_fields of a head's fields (`block`: the bytes after the request line), looked
    up first among the blocks seen lately: a client sends the same fields with every request
    (only the request line names another key), so each is checked once, not per request."""
    plain = _SEEN_BLOCKS.get(block, _UNSEEN)
    if plain is _UNSEEN:
        plain = _plain_fields(block.split(b"\r\n") if block else [])
        if len(block) <= MAX_REMEMBERED_BLOCK:
            if len(_SEEN_BLOCKS) >= MAX_REMEMBERED_BLOCKS:
                _SEEN_BLOCKS.clear()  # a flood of distinct heads costs a re-check, not memory
            _SEEN_BLOCKS[block] = plain
    return plain  # type: ignore[return-value]


def _plain_fields(fields: list[bytes]) -> tuple[bytes, bytes] | None:
    """The first `Connection` value and the `Authorization` value (b"" for none) if every
    field is plain, else None. Two `Authorization` fields are not plain: the WSGI environ
    would join them."""
    if len(fields) > MAX_FIELDS:
        return None
    connection: bytes | None = None
    authorization: bytes | None = None
    hosts = 0
    for field in fields:
        parsed = FIELD.fullmatch(field)
        if parsed is None:  # obs-fold, a bad name or a control byte: Gunicorn decides
            return None
        name = parsed[1].upper()
        if name in NOT_CANONICAL:
            return None
        hosts += name == b"HOST"
        if name == b"CONNECTION" and connection is None:  # Gunicorn reads the first one only
            connection = parsed[2].strip(b" \t").lower()
        elif name == b"AUTHORIZATION":
            if authorization is not None:
                return None
            authorization = parsed[2].strip(b" \t")
    if hosts > 1:
        return None
    return connection or b"", authorization or b""


def _body_length(head: bytes) -> int | None:
    """The body's length as Gunicorn reads it, or None if it is chunked or not certain."""
    length: int | None = 0
    seen = False
    for field in head.split(b"\r\n")[1:]:
        name, colon, value = field.partition(b":")
        if not colon:
            continue
        name = name.upper()
        if name == b"TRANSFER-ENCODING":
            return None
        if name == b"CONTENT-LENGTH":
            value = value.strip(b" \t")
            if seen or not value.isdigit():
                return None
            seen, length = True, int(value)
    return length
