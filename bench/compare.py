"""This tree against another commit, side by side: did a change move the hot paths?

`.venv/bin/python -m bench.compare REF` checks REF out into a temporary git worktree, starts one
Redis and one proxy from each tree (the production command, `make bench`'s settings, this
.venv), then measures HTTP hits and misses and RESP hits (unpipelined and 16-deep) at 50
connections, each scenario in BENCH_ROUNDS rounds interleaved between the two proxies (which
goes first alternates from round to round). It prints each side's median round and the median
of the round-by-round ratios (this tree / REF).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import Result
from bench.run import (
    PROXY_SETTINGS,
    SPREAD_KEYS,
    Measure,
    interleaved,
    redis_benchmark,
    seed,
    start,
    warm,
    wrk,
    wrk_script,
)
from bench.workload import HOT_KEYS
from harness.servers import Proxy, RedisServer

CONNECTIONS = 50


def scenarios(scratch: Path, proxies: dict[str, Proxy]) -> list[list[Measure]]:
    """Per scenario, one measure per proxy, to be interleaved."""
    hot, spread = wrk_script(scratch, "hot", HOT_KEYS), wrk_script(scratch, "spread", SPREAD_KEYS)
    groups: list[list[Measure]] = []
    for kind, script in (("HTTP hit", hot), ("HTTP miss", spread)):
        groups.append(
            [
                wrk(f"{kind} [{label}]", p.url, script, CONNECTIONS, None)
                for label, p in proxies.items()
            ]
        )
    for pipeline in (1, 16):
        groups.append(
            [
                redis_benchmark(f"RESP hit [{label}]", p.resp_port, CONNECTIONS, pipeline, None)
                for label, p in proxies.items()
            ]
        )
    return groups


def report(pair: list[Result]) -> str:
    theirs, mine = pair
    ratios = [m / t for m, t in zip(mine.rounds, theirs.rounds, strict=True)]
    shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return (
        f"{theirs.describe()}\n{mine.describe()}\n"
        f"  this tree / REF: median {statistics.median(ratios):.3f} (by round: {shown})"
    )


def main(ref: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        other = scratch / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), ref], check=True)
        backing = RedisServer(scratch / "redis").start()
        proxies: dict[str, Proxy] = {}
        try:
            seed(backing.client)
            proxies[ref] = start(scratch, backing, "gunicorn.conf.py", PROXY_SETTINGS, root=other)
            proxies["this tree"] = start(scratch, backing, "gunicorn.conf.py", PROXY_SETTINGS)

            def warm_all() -> None:  # misses evicted the hot keys
                for proxy in proxies.values():
                    warm(proxy)

            lines = [
                report(interleaved(group, warm_all, alternate=True))
                for group in scenarios(scratch, proxies)
            ]
            print("\n".join(lines))
        finally:
            for proxy in proxies.values():
                proxy.stop()
            backing.stop()
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], check=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.compare REF   (a commit, tag or branch)")
    main(sys.argv[1])
