"""The MAX_PARALLEL sweep behind the README's "Defaults chosen": proxies side by side.

`.venv/bin/python -m bench.threads [values]` (default 1,2,4) starts one Redis and one proxy per
MAX_PARALLEL value, otherwise with `make bench`'s settings, then measures HTTP hits (hot keys)
and misses (keys spread over far more than the capacity) at 50 connections with wrk, in
BENCH_ROUNDS interleaved rounds of 2 s (default 5), and prints each one's median round.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.run import (
    HOT_KEYS,
    PROXY_SETTINGS,
    SPREAD_KEYS,
    RedisServer,
    seed,
    start,
    warm,
    wrk,
    wrk_script,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONNECTIONS = 50


def main(values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        backing = RedisServer(scratch / "redis").start()
        proxies = []
        try:
            seed(backing.client)
            for value in values:
                settings = {**PROXY_SETTINGS, "MAX_PARALLEL": value}
                proxies.append(start(scratch, backing, "gunicorn.conf.py", settings))
            hot, spread = (
                wrk_script(scratch, "hot", HOT_KEYS),
                wrk_script(scratch, "spread", SPREAD_KEYS),
            )
            rates: dict[str, list[float]] = {}
            for number in range(1, ROUNDS + 1):
                for value, proxy in zip(values, proxies, strict=True):
                    warm(proxy)  # the previous round's misses evicted the hot keys
                    for kind, script in (("hits", hot), ("misses", spread)):
                        result = wrk(kind, proxy.url, script, CONNECTIONS, None)(2)
                        rates.setdefault(f"MAX_PARALLEL={value} {kind}", []).append(result.value)
                print(f"  round {number}/{ROUNDS} done", flush=True)
            for name, rounds in rates.items():
                listed = ", ".join(f"{rate:,.0f}" for rate in rounds)
                print(f"{name}: median {statistics.median(rounds):,.0f} req/s ({listed})")
        finally:
            for proxy in proxies:
                proxy.stop()
            backing.stop()


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["1", "2", "4"])
