"""The MAX_PARALLEL sweep behind docs/performance.md's "Defaults chosen": proxies side by side.

`BENCH_ROUNDS=5 .venv/bin/python -m bench.threads [values]` (default 1,2,4) starts one Redis
and one proxy per MAX_PARALLEL value, otherwise with `make bench`'s settings, then measures HTTP
hits (hot keys) and misses (keys spread over far more than the capacity) at 50 connections with
wrk, interleaved in rounds as `make bench` does (bench.run.interleaved), and prints each one's
median round and every round's throughput.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.run import (
    PROXY_SETTINGS,
    SPREAD_KEYS,
    Measure,
    interleaved,
    seed,
    start,
    warm,
    wrk,
    wrk_script,
)
from bench.workload import HOT_KEYS
from harness.servers import RedisServer

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
            measures: list[Measure] = []
            for value, proxy in zip(values, proxies, strict=True):
                for kind, script in (("hits", hot), ("misses", spread)):
                    measures.append(
                        wrk(f"MAX_PARALLEL={value} {kind}", proxy.url, script, CONNECTIONS, None)
                    )

            def warm_all() -> None:  # each proxy's own misses evicted its hot keys
                for proxy in proxies:
                    warm(proxy)

            for result in interleaved(measures, warm_all):
                listed = ", ".join(f"{rate:,.0f}" for rate in result.rounds)
                print(f"{result.name}: median round {result.value:,.0f} req/s ({listed})")
        finally:
            for proxy in proxies:
                proxy.stop()
            backing.stop()


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["1", "2", "4"])
