"""The benchmark's RESP ceiling answers what the proxy would, however its input is split."""

from __future__ import annotations

import threading

import cachetools
import pytest

from bench.resp_ceiling import UNKNOWN, Ceiling
from proxy.resp import codec as wire

DATA = {b"a": b"1", b"key:000000000042": b"v" * 100}
GETS = [[b"GET", b"a"], [b"get", b"key:000000000042"], [b"GET", b"a"]]


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data


def ceiling() -> tuple[Ceiling, Transport]:
    cache: cachetools.TTLCache[bytes, bytes] = cachetools.TTLCache(10, 60)
    cache.update(DATA)
    protocol, transport = Ceiling(cache, threading.Lock()), Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def stream(commands: list[list[bytes]]) -> bytes:
    return b"".join(wire.request(command) for command in commands)


def test_a_pipelined_frame_of_gets_is_answered_in_order() -> None:
    protocol, transport = ceiling()
    protocol.data_received(stream(GETS))
    assert transport.written == b"".join(wire.bulks([DATA[command[1]] for command in GETS]))


@pytest.mark.parametrize("cut", range(1, len(stream(GETS))))
def test_a_frame_split_anywhere_is_answered_once_complete(cut: int) -> None:
    protocol, transport = ceiling()
    data = stream(GETS)
    protocol.data_received(data[:cut])
    protocol.data_received(data[cut:])
    assert transport.written == b"".join(wire.bulks([DATA[command[1]] for command in GETS]))


def test_anything_but_get_gets_an_error_in_its_place() -> None:
    protocol, transport = ceiling()
    protocol.data_received(stream([[b"CONFIG", b"GET", b"save"], [b"GET", b"a"]]))
    assert transport.written == UNKNOWN + wire.bulk(b"1")
