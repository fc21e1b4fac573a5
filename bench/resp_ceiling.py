"""The RESP ceiling: the least a server over the spec's cache must do to answer a GET.

A uvloop server (the proxy's event loop) that answers each GET from a `cachetools.TTLCache`
under a `threading.Lock`, as the spec's cache is read, and nothing else: no validation beyond
framing, no metrics, no connection state, no misses. `make bench` measures it beside the proxy
and redis-server, so a run shows how much of the gap to redis-server any Python server built on
that cache has too, and how much is the proxy's own. Not a product: it trusts its client.

`running_ceiling()` runs it in a process of its own: `python -m bench.resp_ceiling PORT`. It
holds the benchmark's keys and values (bench/workload.py).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import cachetools
import uvloop

from bench.workload import CAPACITY, VALUE, key_name
from harness.servers import START_DEADLINE, STOP_DEADLINE, poll, reserve_port
from proxy.resp import codec as wire

CRLF = b"\r\n"
UNKNOWN = b"-ERR only GET here\r\n"  # redis-benchmark's CONFIG GET on connect; it carries on


class Ceiling(asyncio.Protocol):
    """One client: each complete command answered, a partial one kept for the next read."""

    def __init__(self, cache: cachetools.TTLCache[bytes, bytes], lock: threading.Lock) -> None:
        self.cache, self.lock = cache, lock
        self.pending = b""
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        lines = (self.pending + data).split(CRLF)  # lines[-1] follows the last CRLF
        if not lines[-1] and len(lines) % 5 == 1 and lines[0] == b"*2":
            self.pending = b""  # whole GET commands, as the benchmark sends them
            self.answer(lines[4::5])
        else:
            self.one_by_one(lines)

    def answer(self, keys: list[bytes]) -> None:
        with self.lock:  # once per read, as the proxy takes it once per run of GETs
            values = [self.cache[key] for key in keys]
        self.transport.write(b"".join([b"$%d\r\n%s\r\n" % (len(v), v) for v in values]))

    def one_by_one(self, lines: list[bytes]) -> None:
        """Anything else: each complete command in turn, a partial one kept for later."""
        start = 0
        while start < len(lines) - 1:
            end = start + 1 + 2 * int(lines[start][1:])  # "*N", then N length-and-value pairs
            if end > len(lines) - 1:
                break
            args = lines[start + 2 : end : 2]
            if args[0].upper() == b"GET":
                self.answer(args[1:2])
            else:
                self.transport.write(UNKNOWN)
            start = end
        self.pending = CRLF.join(lines[start:])


def main(port: int) -> None:
    # As full as the proxy's cache is in the benchmark; entries outlive the run, as there.
    cache: cachetools.TTLCache[bytes, bytes] = cachetools.TTLCache(CAPACITY, 3600)
    for number in range(CAPACITY):
        cache[key_name(number).encode()] = VALUE
    lock = threading.Lock()
    loop = uvloop.new_event_loop()
    loop.run_until_complete(
        loop.create_server(lambda: Ceiling(cache, lock), "127.0.0.1", port, reuse_address=True)
    )
    loop.run_forever()


@contextmanager
def running_ceiling() -> Iterator[int]:
    """This server in a process of its own while the block runs; yields its port."""
    port = reserve_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.resp_ceiling", str(port)])
    try:
        poll(lambda: _answers(process, port), START_DEADLINE, f"the RESP ceiling on port {port}")
        yield port
    finally:
        process.terminate()
        process.wait(STOP_DEADLINE)


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the RESP ceiling exited with status {process.returncode}")
    expected = wire.bulk(VALUE)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(wire.request([b"GET", key_name(0).encode()]))
            return sock.makefile("rb").read(len(expected)) == expected
    except OSError:
        return False


if __name__ == "__main__":
    main(int(sys.argv[1]))
