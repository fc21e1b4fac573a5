"""Where a request ends and whether the loop may answer it: proxy/http/framing.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http import framing
from proxy.http.framing import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    Canonical,
    Framed,
    scan,
)

CURL = (
    b"GET /get/k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
)


def frames(buf: bytes) -> list[Framed]:
    """Every request scan() finds in `buf`, in order, as the loop walks it."""
    found, pos = [], 0
    while (framed := scan(buf, pos)) is not None:
        found.append(framed)
        pos = framed.end
        if not framed.exact:
            break
    return found


@pytest.mark.parametrize(
    ("request_bytes", "canonical"),
    [
        (CURL, Canonical("GET", "/get/k", b"1.1", True)),
        (
            b"HEAD /get/a%2Fb?x=1 HTTP/1.1\r\n\r\n",
            Canonical("HEAD", "/get/a%2Fb?x=1", b"1.1", True),
        ),
        (b"GET /get/k HTTP/1.0\r\n\r\n", Canonical("GET", "/get/k", b"1.0", False)),
        (
            b"GET /get/k HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            Canonical("GET", "/get/k", b"1.0", True),
        ),
        (
            b"GET /get/k HTTP/1.1\r\nconnection:  close \r\nConnection: keep-alive\r\n\r\n",
            Canonical("GET", "/get/k", b"1.1", False),  # Gunicorn reads the first one only
        ),
        (
            b"GET /get/k HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            Canonical("GET", "/get/k", b"1.1", True),
        ),
    ],
)
def test_canonical_reads_are_recognised(request_bytes: bytes, canonical: Canonical) -> None:
    assert scan(request_bytes) == Framed(len(request_bytes), True, canonical)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /get/k HTTP/1.1\r\n\r\n",
        b"get /get/k HTTP/1.1\r\n\r\n",
        b"GET /livez HTTP/1.1\r\n\r\n",
        b"GET http://h/get/k HTTP/1.1\r\n\r\n",  # absolute form: Gunicorn and Flask decide
        b"GET /get/k#frag HTTP/1.1\r\n\r\n",
        b"GET /get/k HTTP/2.0\r\n\r\n",
        b"GET  /get/k HTTP/1.1\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nX_Under: a\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nBad: a\x01b\r\n\r\n",
        b"\r\nGET /get/k HTTP/1.1\r\n\r\n",
        b"GET /get/" + b"k" * 8200 + b" HTTP/1.1\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n",
    ],
)
def test_anything_unusual_is_left_to_gunicorn(request_bytes: bytes) -> None:
    framed = scan(request_bytes)
    assert framed is not None
    assert framed.canonical is None


def test_a_head_is_waited_for_until_it_ends() -> None:
    assert scan(CURL[:-1]) is None
    assert scan(CURL[:-1] + b"\n") is not None


def test_a_body_is_waited_for_up_to_its_length() -> None:
    request = b"POST /get/k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    assert scan(request[:-1]) is None
    assert scan(request + CURL) == Framed(len(request), True, None)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
    ],
)
def test_uncertain_or_long_bodies_are_handed_over_with_everything_read(head: bytes) -> None:
    buf = head + b"0\r\n\r\n" + CURL
    assert scan(buf) == Framed(len(buf), False, None)


def test_a_head_past_the_limit_is_handed_over_as_it_is() -> None:
    buf = b"GET /x HTTP/1.1\r\n" + b"A: b\r\n" * (MAX_HEAD_BYTES // 6 + 1)
    assert scan(buf[: MAX_HEAD_BYTES - 1]) is None
    assert scan(buf) == Framed(len(buf), False, None, oversized=True)


REQUESTS = st.sampled_from(
    [
        CURL,
        b"GET /get/a HTTP/1.0\r\n\r\n",
        b"HEAD /get/b HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"POST /get/c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
)


@given(st.lists(REQUESTS, min_size=1, max_size=4), st.data())
def test_requests_are_found_alike_whatever_the_reads_were(requests: list[bytes], data) -> None:
    """The loop rescans what it holds after every read: the requests it finds do not depend on
    where the reads split the bytes."""
    whole = b"".join(requests)
    splits = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=5)))
    found, held = [], b""
    for start, end in zip([0, *splits], [*splits, len(whole)], strict=True):
        held += whole[start:end]
        taken = 0
        for framed in frames(held):
            found.append(held[taken : framed.end])
            taken = framed.end
        held = held[taken:]
    assert found == requests
    assert [f.canonical for f in frames(whole)] == [scan(r).canonical for r in requests]  # type: ignore[union-attr]


def test_header_blocks_are_remembered_boundedly_and_answer_as_checked() -> None:
    framing._SEEN_BLOCKS.clear()
    plain = b"GET /get/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    folded = b"GET /get/k HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"
    for _ in range(2):  # the second time from memory: the same answers
        assert scan(plain) == framing.Framed(
            len(plain), True, Canonical("GET", "/get/k", b"1.1", False)
        )
        assert scan(folded) is not None and scan(folded).canonical is None  # type: ignore[union-attr]
    for number in range(3 * framing.MAX_REMEMBERED_BLOCKS):  # a flood of distinct heads
        scan(b"GET /get/k HTTP/1.1\r\nX-N: %d\r\n\r\n" % number)
    assert len(framing._SEEN_BLOCKS) <= framing.MAX_REMEMBERED_BLOCKS
    huge = b"GET /get/k HTTP/1.1\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n"
    assert scan(huge).canonical is not None  # type: ignore[union-attr]
    assert not any(len(block) > framing.MAX_REMEMBERED_BLOCK for block in framing._SEEN_BLOCKS)
