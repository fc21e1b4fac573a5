"""The RESP wire format: an incremental request parser and reply encoders (RESP2 and RESP3).

Requests are arrays of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`) or inline commands
(`GET k\\r\\n`, as typed into telnet; split on whitespace, no quoting). Every length is checked
against a named limit before anything is allocated; a violation raises ProtocolError with
Redis's own wording.
"""

from __future__ import annotations

from proxy.errors import ProtocolError

MAX_INLINE_BYTES = 64 * 1024  # an inline command, or the length line of an array or bulk
MAX_ARRAY_LENGTH = 64 * 1024  # arguments in one command (an MGET of 65535 keys)
MAX_BULK_BYTES = 1024 * 1024  # one argument (a key)
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # one whole command as it waits to be complete
# Digits in any number a client sends (a length, a protocol version, a DB index): enough for a
# signed 64-bit integer, as Redis reads them; Python's int() refuses past 4,300 digits anyway.
MAX_DIGITS = 19
CRLF = b"\r\n"
GET_NAMES = frozenset((b"GET", b"get", b"Get"))
# The length lines of bulk strings up to 4 KiB, b"$0" to b"$4095": the GET fast paths look them
# up rather than format them, as formatting is a large share of their per-command cost.
LENGTH_LINES = [b"$%d" % size for size in range(4096)]
length_line = LENGTH_LINES.__getitem__  # IndexError past the table


class RequestParser:
    """Turns a byte stream into commands (lists of bytes), keeping state between chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._args: list[bytes] | None = None  # the array being read, if incomplete
        self._remaining = 0  # bulk strings still to read into _args
        self._held = 0  # bytes of _args, for MAX_REQUEST_BYTES

    @property
    def empty(self) -> bool:
        """No partial command is buffered."""
        return not self._buffer and self._args is None

    def feed(self, data: bytes) -> list[list[bytes]]:
        """All the commands completed by `data`, in order. Raises ProtocolError."""
        commands: list[list[bytes]] = []
        if not self._buffer and self._args is None and data[:1] == b"*":
            commands, used = split_simple_commands(data)
            if used == len(data):
                return commands
            data = data[used:]  # the rest, if anything is unusual about it, the careful way
        self._buffer += data
        try:
            while (command := self._next()) is not None:
                if command:  # empty inline lines and *0 arrays are ignored, as Redis does
                    commands.append(command)
            del self._buffer[: self._pos]
            self._pos = 0
            if len(self._buffer) + self._held > MAX_REQUEST_BYTES:
                raise ProtocolError(f"request larger than {MAX_REQUEST_BYTES} bytes")
        except ProtocolError as exc:
            exc.commands_before = commands
            raise
        return commands

    def _next(self) -> list[bytes] | None:
        if self._args is None:
            if self._pos >= len(self._buffer):
                return None
            if self._buffer[self._pos] != ord("*"):
                return self._inline()
            count = self._length_line(b"*", MAX_ARRAY_LENGTH, "multibulk")
            if count is None:
                return None
            if count <= 0:
                return []
            self._args, self._remaining, self._held = [], count, 0
        while self._remaining:
            arg = self._bulk()
            if arg is None:
                return None
            self._args.append(arg)
            self._remaining -= 1
            self._held += len(arg)
        command, self._args, self._held = self._args, None, 0
        return command

    def _inline(self) -> list[bytes] | None:
        end = self._buffer.find(b"\n", self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > MAX_INLINE_BYTES:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 1
        return line.split()

    def _bulk(self) -> bytes | None:
        if self._pos >= len(self._buffer):
            return None
        if self._buffer[self._pos] != ord("$"):
            got = chr(self._buffer[self._pos])
            raise ProtocolError(f"expected '$', got '{got}'")
        start = self._pos
        size = self._length_line(b"$", MAX_BULK_BYTES, "bulk")
        if size is None:
            return None
        if size < 0:
            raise ProtocolError("invalid bulk length")
        end = self._pos + size
        if end + 2 > len(self._buffer):
            self._pos = start  # read the length line again when the rest has arrived
            return None
        if self._buffer[end : end + 2] != CRLF:
            raise ProtocolError("expected CRLF after a bulk string")
        arg = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        return arg

    def _length_line(self, marker: bytes, limit: int, name: str) -> int | None:
        """Parse `<marker><integer>\\r\\n` at the current position; None if incomplete."""
        end = self._buffer.find(CRLF, self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > MAX_INLINE_BYTES:
                raise ProtocolError(f"too big {name} count string")
            return None
        value = parse_integer(bytes(self._buffer[self._pos + 1 : end]))
        if value is None or value > limit:
            raise ProtocolError(f"invalid {name} length")
        self._pos = end + 2
        return value


def parse_integer(text: bytes) -> int | None:
    """`text` as a decimal integer, strictly (an optional "-" and at most MAX_DIGITS digits:
    no "+", "_" or spaces, which int() would take), else None."""
    digits = text.removeprefix(b"-")
    if not digits.isdigit() or len(digits) > MAX_DIGITS:
        return None
    return int(text)


def split_simple_commands(data: bytes) -> tuple[list[list[bytes]], int]:
    """The leading complete commands of `data` and the bytes they use: the fast path.

    One C-level split on CRLF, then every argument's declared length is checked against the
    argument's real length. It stops, leaving the rest to the careful parser, at anything
    unusual: an incomplete command, an argument containing CRLF, a count over a limit. No
    argument can exceed MAX_BULK_BYTES, as no chunk taken here is longer.
    """
    if len(data) > MAX_BULK_BYTES:
        return [], 0
    parts = data.split(CRLF)
    last = len(parts) - 1  # parts[last] follows the final CRLF: never a complete line
    commands: list[list[bytes]] = []
    index = 0
    while index < last:
        head = parts[index]
        count = parse_integer(head[1:]) if head[:1] == b"*" else None
        if count is None or not 0 < count <= MAX_ARRAY_LENGTH:
            break
        stop = index + 1 + 2 * count
        if stop > last:
            break
        args = parts[index + 2 : stop : 2]
        if parts[index + 1 : stop : 2] != [b"$%d" % len(arg) for arg in args]:
            break
        commands.append(args)
        index = stop
    if index == last and not parts[last]:
        return commands, len(data)
    return commands, (len(CRLF.join(parts[:index])) + 2 if index else 0)


def get_keys(data: bytes) -> list[bytes] | None:
    """The keys if `data` is exactly a run of whole `GET key` array commands, else None.

    That is what a client sends for every read, pipelined or not: the fastest path. One
    C-level split on CRLF gives five parts per command; every key must be exactly as long as
    its declared length, so a key containing CRLF (or anything unusual) returns None and is
    left to the careful parser.
    """
    if len(data) > MAX_BULK_BYTES:
        return None
    parts = data.split(CRLF)
    count, rest = divmod(len(parts), 5)
    if rest != 1 or not count or parts[-1]:
        return None
    keys = parts[4::5]
    try:
        if count == 1:  # the unpipelined frame, the commonest: no slices to build
            head, size, name, length, key = parts[:5]
            valid = (head, size, length) == (b"*2", b"$3", length_line(len(key)))
            valid = valid and name in GET_NAMES
        else:
            valid = (
                parts[3::5] == list(map(length_line, map(len, keys)))
                and parts[0:-1:5].count(b"*2") == count
                and parts[1::5].count(b"$3") == count
                and GET_NAMES.issuperset(parts[2::5])
            )
    except IndexError:  # a key longer than LENGTH_LINES: rare enough for the careful parser
        return None
    return keys if valid else None


def request(args: list[bytes]) -> bytes:
    """A command as clients send it: an array of bulk strings (the parser's inverse)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(arg) for arg in args)


# Replies. RESP3 differs from RESP2 only in the types used here for null and map.


def simple(text: str) -> bytes:
    return b"+" + text.encode() + CRLF


def error(text: str) -> bytes:
    """An error reply; `text` starts with its code (ERR, WRONGTYPE, ...). Line breaks removed."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + CRLF


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


BULK = b"$%d\r\n%s\r\n"
# A value at least this long is written by reference (its length line, the value, CRLF as
# separate buffers) rather than copied into a reply: a 300 MB cached value read by five
# clients at once stays one 300 MB object.
LARGE_VALUE = 64 * 1024
Pieces = list[bytes]  # a reply, or several, as buffers written in order


def bulk(value: bytes) -> bytes:
    return BULK % (len(value), value)


def bulk_pieces(value: bytes) -> Pieces:
    """A bulk reply: copied into one buffer if small, else the value itself between its
    length line and CRLF."""
    if len(value) < LARGE_VALUE:
        return [BULK % (len(value), value)]
    return [b"$%d\r\n" % len(value), value, CRLF]


def bulks(values: list[bytes]) -> Pieces:
    """One bulk reply per value, in order: a pipelined run of GET answers."""
    # Interleaved length lines and values joined by CRLF: the loop runs in C, not once per
    # reply in Python.
    parts = [b""] * (2 * len(values) + 1)
    try:
        parts[0:-1:2] = map(length_line, map(len, values))
    except IndexError:  # a value longer than LENGTH_LINES: maybe a large one
        return [piece for value in values for piece in bulk_pieces(value)]
    parts[1::2] = values
    return [CRLF.join(parts)]


def null(protocol: int) -> bytes:
    return b"_\r\n" if protocol == 3 else b"$-1\r\n"


def bulk_or_null(value: bytes | None, protocol: int) -> Pieces:
    return [null(protocol)] if value is None else bulk_pieces(value)


def verbatim(text: bytes, protocol: int) -> bytes:
    """Text for a person (INFO, CLIENT INFO): RESP3's verbatim string, or RESP2's bulk."""
    if protocol == 3:
        return b"=%d\r\ntxt:%s\r\n" % (len(text) + 4, text)
    return bulk(text)


def array(items: list[bytes]) -> bytes:
    """An array of already-encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def mapping(pairs: list[tuple[bytes, bytes]], protocol: int) -> bytes:
    """A map of already-encoded keys and values: RESP3 map, or RESP2 flat array."""
    flat = [part for pair in pairs for part in pair]
    if protocol == 3:
        return b"%%%d\r\n" % len(pairs) + b"".join(flat)
    return array(flat)
