"""Past one machine, what it costs: `python -m bench.scale_out` (docs/scaling.md).

Side by side, in interleaved rounds (as `make bench`), with wrk at 50 connections:
* a hit and a miss through a proxy over a three-primary Redis Cluster against the same
  through a proxy over a single redis-server;
* hits through three proxies behind HAProxy (deploy/haproxy.cfg) against one proxy behind
  the same HAProxy and one proxy reached directly.
Every process runs on this machine, wrk included: on two cores this measures what the extra
hops cost, not how far more proxies scale (docs/scaling.md says why). Writes
bench/scale_out.md. Environment: BENCH_SECONDS, BENCH_ROUNDS, BENCH_OUT as `make bench`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import redis

from bench.report import Result, ratio_to_floor, round_ratios
from bench.run import (
    HTTP_KEYS,
    OUT,
    PROXY_SETTINGS,
    ROUND_SECONDS,
    ROUNDS,
    SPREAD_KEYS,
    interleaved,
    warm,
    wrk,
    wrk_script,
)
from bench.workload import VALUE, key_name
from harness.balancer import HAProxy
from harness.cluster import Cluster
from harness.servers import Proxy, RedisServer, reserve_port

SINGLE, CLUSTERED = "single redis-server", "Redis Cluster, 3 primaries"
DIRECT, ONE_BEHIND, THREE_BEHIND = "1 proxy", "1 proxy behind HAProxy", "3 proxies behind HAProxy"


def main() -> int:
    missing = [tool for tool in ("wrk", "haproxy") if shutil.which(tool) is None]
    if missing:
        print(f"scale_out: missing {', '.join(missing)} (Debian: wrk, haproxy)", file=sys.stderr)
        return 2
    print(f"scale_out: {ROUNDS} interleaved rounds of {ROUND_SECONDS} s per scenario")
    with tempfile.TemporaryDirectory() as scratch:
        results = run_all(Path(scratch))
    (OUT / "scale_out.md").write_text(report(results))
    print(f"scale_out: wrote {OUT / 'scale_out.md'}")
    return 0


def run_all(scratch: Path) -> list[Result]:
    with ExitStack() as stack:
        single = stack.enter_context(running(RedisServer(scratch / "redis")))
        cluster = stack.enter_context(running(Cluster(scratch / "cluster")))
        seed(single.client)
        seed(cluster.client())
        over_single = stack.enter_context(proxy(scratch, single.url, {}))
        over_cluster = stack.enter_context(proxy(scratch, cluster.url, {"REDIS_CLUSTER": "yes"}))
        more = [stack.enter_context(proxy(scratch, single.url, {})) for _ in range(2)]
        three = stack.enter_context(running(HAProxy([over_single, *more], scratch / "ha3.log")))
        one = stack.enter_context(running(HAProxy([over_single], scratch / "ha1.log")))
        cached = wrk_script(scratch, "cached", HTTP_KEYS)
        spread = wrk_script(scratch, "spread", SPREAD_KEYS)
        warm_all = partial(warm, over_single, over_cluster, *more)
        results = []
        for kind, script in (("hit", cached), ("miss", spread)):  # misses evict: not in one round
            anchor = f"HTTP {kind}, {SINGLE}"
            measures = [
                wrk(anchor, over_single.url, script, 50, None),
                wrk(f"HTTP {kind}, {CLUSTERED}", over_cluster.url, script, 50, anchor),
            ]
            results += interleaved(measures, warm_all, alternate=True)
        anchor = f"HTTP hit, {DIRECT}"
        measures = [wrk(anchor, over_single.url, cached, 50, None)]
        for name, balancer in ((ONE_BEHIND, one), (THREE_BEHIND, three)):
            measures.append(wrk(f"HTTP hit, {name}", balancer.url, cached, 50, anchor))
        results += interleaved(measures, warm_all, alternate=True)
    return results


@contextmanager
def running(server: RedisServer | Cluster | HAProxy) -> Iterator:  # type: ignore[type-arg]
    started = server.start()
    try:
        yield started
    finally:
        server.stop()


@contextmanager
def proxy(scratch: Path, url: str, settings: dict[str, str]) -> Iterator[Proxy]:
    env = {**PROXY_SETTINGS, **settings, "REDIS_URL": url, "PROXY_HOST": "127.0.0.1"}
    env |= {"PROXY_PORT": str(reserve_port()), "RESP_PORT": str(reserve_port())}
    started = Proxy(env, scratch / f"proxy-{env['PROXY_PORT']}.log").start()
    try:
        yield started
    finally:
        started.stop()


def seed(client: redis.Redis | redis.RedisCluster) -> None:
    """The keys every scenario reads (the miss scenario's spread includes the hits')."""
    pipe = client.pipeline(transaction=False)
    for number in range(SPREAD_KEYS):
        pipe.set(key_name(number), VALUE)
        if number % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def report(results: list[Result]) -> str:
    """A table of the median rounds, each with its ratio to its anchor round by round."""
    lines = [
        "# Past one machine: what a cluster and a load balancer cost",
        "",
        f"`python -m bench.scale_out`: {ROUNDS} interleaved rounds of {ROUND_SECONDS} s per "
        "scenario, wrk at 50 connections, every process on this 2-core machine. The ratio is "
        "the median of the round-by-round ratios to the scenario named beside it.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        ratio = ratio_to_floor(results, result)
        shown = (
            ""
            if ratio is None
            else f"{ratio:.2f}× {result.floor} (rounds: "
            + ", ".join(f"{r:.2f}" for r in round_ratios(results, result))
            + ")"
        )
        lines.append(
            f"| {result.name} | {result.value:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} "
            f"| {shown} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
