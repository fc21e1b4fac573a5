"""The RESP request parser and reply encoders."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import ProtocolError
from proxy.resp import codec as wire


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[list[bytes]]:
    parser, commands, start = wire.RequestParser(), [], 0
    for cut in [*sorted(cuts), len(data)]:
        commands += parser.feed(data[start:cut])
        start = cut
    return commands


def test_array_command() -> None:
    assert wire.RequestParser().feed(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n") == [[b"GET", b"key"]]


def test_inline_command_with_and_without_cr() -> None:
    parser = wire.RequestParser()
    assert parser.feed(b"GET  key\r\nPING\n") == [[b"GET", b"key"], [b"PING"]]


def test_empty_lines_and_empty_arrays_are_ignored() -> None:
    assert wire.RequestParser().feed(b"\r\n*0\r\n\r\nPING\r\n") == [[b"PING"]]


def test_pipelined_commands_come_out_in_order() -> None:
    data = b"".join(wire.request([b"GET", b"k%d" % i]) for i in range(1000))
    assert wire.RequestParser().feed(data) == [[b"GET", b"k%d" % i] for i in range(1000)]


def test_binary_arguments_with_crlf_inside_are_kept_whole() -> None:
    command = [b"GET", b"a\r\nb\r\n", b"", b"\x00\xff"]
    assert wire.RequestParser().feed(wire.request(command) + wire.request([b"PING"])) == [
        command,
        [b"PING"],
    ]


def test_command_split_at_every_byte_is_reassembled() -> None:
    data = wire.request([b"MGET", b"a\r\n", b"bb"]) + b"PING\r\n" + wire.request([b"GET", b"k"])
    parser = wire.RequestParser()
    commands = [command for byte in data for command in parser.feed(bytes([byte]))]
    assert commands == [[b"MGET", b"a\r\n", b"bb"], [b"PING"], [b"GET", b"k"]]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*1_0\r\n", "invalid multibulk length"),
        (b"*%d\r\n" % (wire.MAX_ARRAY_LENGTH + 1), "invalid multibulk length"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$%d\r\n" % (wire.MAX_BULK_BYTES + 1), "invalid bulk length"),
        (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
        (b"*1\r\n$3\r\nabcXY", "expected CRLF after a bulk string"),
        (b"G" * (wire.MAX_INLINE_BYTES + 1), "too big inline request"),
        (b"*" + b"1" * (wire.MAX_INLINE_BYTES + 1), "too big multibulk count string"),
        (b"*" + b"9" * 5000 + b"\r\n", "invalid multibulk length"),
        (b"*1\r\n$" + b"9" * 5000 + b"\r\n", "invalid bulk length"),
        (b"*1\r\n$" + b"0" * 20 + b"1\r\n", "invalid bulk length"),
    ],
)
def test_malformed_frames_raise_redis_wording(frame: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        wire.RequestParser().feed(frame)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-12", -12),
        (b"9" * wire.MAX_DIGITS, int("9" * wire.MAX_DIGITS)),
        (b"9" * (wire.MAX_DIGITS + 1), None),
        (b"9" * 5000, None),
        (b"+1", None),
        (b"1_0", None),
        (b" 1", None),
        (b"", None),
        (b"-", None),
        (b"\xd9\xa1", None),
    ],
)
def test_integers_are_strict_and_bounded_before_conversion(text: bytes, value: int | None) -> None:
    assert wire.parse_integer(text) == value


def test_a_huge_count_is_left_by_the_fast_path_to_the_parser() -> None:
    frame = b"*" + b"9" * 5000 + b"\r\n$3\r\nGET\r\n"
    assert wire.split_simple_commands(frame) == ([], 0)


def test_request_over_the_size_limit_is_refused_before_it_completes() -> None:
    parser = wire.RequestParser()
    big = b"x" * (wire.MAX_BULK_BYTES - 10)
    head = b"*20\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(big), big) for _ in range(17))
    with pytest.raises(ProtocolError, match="request larger than"):
        parser.feed(head + b"$%d\r\n" % len(big) + big[:100])  # 17 MiB of one command


arguments = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(arguments, min_size=1, max_size=8), st.lists(st.integers(0, 2000), max_size=6))
def test_any_chunking_of_valid_commands_gives_the_same_commands(commands, cuts) -> None:
    data = b"".join(wire.request(command) for command in commands)
    assert feed_in_pieces(data, [cut % (len(data) + 1) for cut in cuts]) == commands


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_either_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        commands = wire.RequestParser().feed(data)
    except ProtocolError:
        return
    assert all(isinstance(arg, bytes) for command in commands for arg in command)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(arguments, min_size=1, max_size=4),
    st.integers(0, 10_000),
    st.binary(min_size=1, max_size=4),
)
def test_mutated_frames_either_parse_or_raise_protocol_error(commands, where, garbage) -> None:
    data = bytearray(b"".join(wire.request(command) for command in commands))
    where %= len(data)
    data[where : where + len(garbage)] = garbage
    with contextlib.suppress(ProtocolError):
        wire.RequestParser().feed(bytes(data))


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (wire.null, b"$-1\r\n", b"_\r\n"),
        (lambda p: b"".join(wire.bulk_or_null(b"v", p)), b"$1\r\nv\r\n", b"$1\r\nv\r\n"),
        (lambda p: b"".join(wire.bulk_or_null(None, p)), b"$-1\r\n", b"_\r\n"),
        (
            lambda p: wire.mapping([(wire.bulk(b"a"), wire.integer(1))], p),
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"%1\r\n$1\r\na\r\n:1\r\n",
        ),
    ],
)
def test_replies_by_protocol(reply, resp2: bytes, resp3: bytes) -> None:
    assert (reply(2), reply(3)) == (resp2, resp3)


def test_error_replies_never_contain_line_breaks() -> None:
    assert wire.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"


GET_K = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
LARGE = b"x" * wire.LARGE_VALUE
LONGEST = b"k" * (len(wire.LENGTH_LINES) - 1)


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", [b"key"]),
        (b"*2\r\n$3\r\nget\r\n$0\r\n\r\n", [b""]),
        (GET_K * 3 + b"*2\r\n$3\r\nGet\r\n$2\r\nk2\r\n", [b"k", b"k", b"k", b"k2"]),
        (b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n", None),  # CRLF in a key: the careful way
        (GET_K + b"*1\r\n$4\r\nPING\r\n", None),  # not only GETs
        (GET_K + b"PING\r\n", None),
        (GET_K + b"*2\r\n$3\r\nGET\r\n$3\r\nke", None),  # incomplete
        (b"*2\r\n$3\r\nSET\r\n$3\r\nkey\r\n", None),
        (b"*2\r\n$3\r\nGET\r\n$+3\r\nkey\r\n", None),
        (GET_K + b"*2\r\n$3\r\nGET\r\n$03\r\nkey\r\n", None),
        (b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\nk\r\n", None),
        (b"GET key\r\n", None),
        (b"", None),
        (wire.request([b"GET", LONGEST]), [LONGEST]),  # the longest key in LENGTH_LINES
        (wire.request([b"GET", LONGEST]) * 2, [LONGEST, LONGEST]),
        (wire.request([b"GET", LONGEST + b"k"]), None),  # longer: the careful parser
        (GET_K + wire.request([b"GET", LONGEST + b"k"]), None),
    ],
)
def test_get_keys_recognises_frames_of_nothing_but_get_commands(
    data: bytes, keys: list[bytes] | None
) -> None:
    assert wire.get_keys(data) == keys
    if keys is not None:
        assert [key for _, key in wire.RequestParser().feed(data)] == keys


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"GET", b"get", b"GET", b"MGET"]), st.binary(max_size=12))),
    st.integers(0, 400),
    st.binary(max_size=3),
)
def test_get_keys_never_disagrees_with_the_parser(commands, where, garbage) -> None:
    data = bytearray(b"".join(wire.request(list(command)) for command in commands))
    data[where : where + len(garbage)] = garbage
    keys = wire.get_keys(bytes(data))
    if keys is not None:  # the fast path claims it: the careful parser must read the same
        parsed = wire.RequestParser().feed(bytes(data))
        assert [[name.upper(), key] for name, key in parsed] == [[b"GET", key] for key in keys]


@pytest.mark.parametrize(
    "values",
    [
        [],
        [b""],
        [b"v"],
        [b"a", b"bc", b""],
        [LONGEST, b"v"],
        [b"v", LONGEST + b"k", b"w"],
        [b"v", LARGE, b"w", LARGE],
    ],
)
def test_bulks_encodes_each_value_as_a_bulk_reply(values: list[bytes]) -> None:
    assert b"".join(wire.bulks(values)) == b"".join(wire.bulk(value) for value in values)


def test_a_large_value_is_written_by_reference_not_copied() -> None:
    pieces = wire.bulk_pieces(LARGE)
    assert b"".join(pieces) == wire.bulk(LARGE)
    assert any(piece is LARGE for piece in pieces)
    assert any(piece is LARGE for piece in wire.bulks([b"v", LARGE]))
    assert wire.bulk_pieces(b"small") == [b"$5\r\nsmall\r\n"]
