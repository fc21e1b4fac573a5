"""`make bench`: the proxy measured against its floors, side by side in one run.

Starts its own Redis, the proxy (the production command), the floor app (the same Gunicorn
settings), the anchors a user would run instead (bench/anchors.py: webdis, Varnish in front of
it, twemproxy) and, for RESP at 50 connections, the Python ceiling (bench/resp_ceiling.py);
seeds and warms, then measures with wrk (HTTP, a random key of 10,000 per request) and
redis-benchmark (RESP). Prints a progress line per run
and writes bench/results.md and bench/results.png.
Scenarios compared with each other run interleaved, in BENCH_ROUNDS short rounds, so that a slow
spell of this noisy machine hits the proxy and its floor alike. Each scenario shows its median
round (the lower middle one for an even count); each ratio is the median of the round-by-round
ratios, and the pipelined target the median of the rounds' throughputs (bench/report.py).
Environment: BENCH_SECONDS (per timed scenario, default 8), BENCH_ROUNDS (default 4),
BENCH_OUT (default bench).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import redis
import requests

from bench.anchors import (
    TWEMPROXY,
    VARNISH,
    WEBDIS,
    Anchors,
    missing_programs,
    running_anchors,
    webdis_path,
)
from bench.report import Result, write_report
from bench.resp_ceiling import running_ceiling
from bench.scaling import (
    HIT_LARGE,
    LARGE,
    MGET_FIRST_KEY,
    cold_keys_needed,
    cold_mgets,
    memory_at_large,
    scaling_chart,
    seed_range,
)
from bench.workload import CAPACITY, HOT_KEYS, VALUE, key_name
from harness.certs import make_certificates
from harness.servers import ROOT, Proxy, RedisServer, reserve_port

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
ROUND_SECONDS = max(1, round(SECONDS / ROUNDS))  # wrk takes whole seconds
OUT = Path(os.environ.get("BENCH_OUT", "bench"))
CEILING = "Python RESP ceiling"  # bench/resp_ceiling.py
HTTP_KEYS = CAPACITY  # every HTTP scenario spreads its reads over as many keys as are cached
SPREAD_KEYS = 200_000  # far more than CAPACITY: the HTTP miss scenario
MEMORY_ENTRIES = 100_000
PROXY_SETTINGS = {
    "CACHE_TTL": "600",
    "CACHE_MAXSIZE": str(CAPACITY),
    "MAX_PARALLEL": "4",
    "MAX_CONNECTIONS": "200",
    "REDIS_TIMEOUT": "2",
    "LOG_LEVEL": "warning",
}
SEQUENTIAL = {"MAX_PARALLEL": "1"}  # the HTTP hit is reported at the default and at 1
HIT_SEQUENTIAL = "HTTP hit, MAX_PARALLEL=1"
# Hits of authenticated clients, beside the open proxy's in the same rounds: the password on
# both front ends, then TLS on top of it.
PASSWORD = "bench-password-0123456789"
SECURED = {"PROXY_PASSWORD": PASSWORD}
HIT_PASSWORD = "HTTP hit, with a password"
HIT_TLS = "HTTP hit, TLS and a password"
RESP_PASSWORD = "RESP hit, with a password"
LARGE_CACHE = {"CACHE_MAXSIZE": str(LARGE)}  # the hit scenario's million keys, all cached


def main() -> int:
    missing = [tool for tool in ("wrk", "redis-benchmark") if shutil.which(tool) is None]
    if missing or missing_programs():
        print(
            f"bench: missing {', '.join([*missing, *missing_programs()])}; install Debian's "
            "wrk, redis-tools, varnish, webdis and nutcracker",
            file=sys.stderr,
        )
        return 2
    print(
        f"bench: {ROUNDS} interleaved rounds of {ROUND_SECONDS} s per timed scenario; "
        f"proxy settings: {PROXY_SETTINGS}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        results = run_all(Path(scratch))
    method = f"{ROUNDS} interleaved rounds of {ROUND_SECONDS} s per scenario"
    write_report(results, OUT, PROXY_SETTINGS, method)
    scaling_chart(results, OUT / "scaling.png")
    print(f"bench: wrote {OUT / 'scaling.png'}")
    return 0


def run_all(scratch: Path) -> list[Result]:
    backing = RedisServer(scratch / "redis").start()
    try:
        seed(backing.client)
        results = measure_servers(scratch, backing)
        results.append(memory(scratch, backing))
    finally:
        backing.stop()
    return results


def measure_servers(scratch: Path, backing: RedisServer) -> list[Result]:
    """Every timed scenario, and coalescing, with the proxy, the floor and the anchors up."""
    proxy = start(scratch, backing, "gunicorn.conf.py", PROXY_SETTINGS)
    sequential = start(scratch, backing, "gunicorn.conf.py", {**PROXY_SETTINGS, **SEQUENTIAL})
    floor = start(scratch, backing, "bench/floor.conf.py", PROXY_SETTINGS)
    secured = start(scratch, backing, "gunicorn.conf.py", {**PROXY_SETTINGS, **SECURED})
    certs = make_certificates(scratch / "certs")
    tls = {"TLS_CERT_FILE": str(certs.server.cert), "TLS_KEY_FILE": str(certs.server.key)}
    client_tls = ssl.create_default_context(cafile=str(certs.ca))
    over_tls = start(
        scratch,
        backing,
        "gunicorn.conf.py",
        {**PROXY_SETTINGS, **SECURED, **tls},
        client_tls=client_tls,
    )
    large = start(scratch, backing, "gunicorn.conf.py", {**PROXY_SETTINGS, **LARGE_CACHE})
    servers = (floor, sequential, proxy, secured, over_tls, large)
    try:
        # The floor answers any key with its constant; a 404 would mean the proxy answering.
        assert floor.get("/get/absent-from-redis").status_code == 200, "the floor is not served"
        warm(proxy, sequential, secured, over_tls)
        results = [progress(memory_at_large(large, rss_bytes))]  # fills the large cache
        with running_anchors(scratch, backing.port) as anchors:
            warm_varnish(anchors.varnish_url)
            results += http_scenarios(scratch, servers[1:], floor, anchors)
            with running_ceiling() as ceiling_port:
                results += resp_scenarios((proxy, secured), backing, ceiling_port, anchors)
        results += [progress(result) for result in cold_mgets(proxy, backing.port)]
        results.append(coalescing(proxy, backing))
    finally:
        for server in servers:
            server.stop()
    return results


def start(
    scratch: Path,
    backing: RedisServer,
    config: str,
    settings: dict[str, str],
    *,
    client_tls: ssl.SSLContext | None = None,
    root: Path = ROOT,
) -> Proxy:
    """A proxy (or the floor) over `backing`, from the checkout at `root`, on reserved ports
    (`client_tls`: what its readiness probe trusts, when it serves TLS)."""
    env = {**settings, "REDIS_URL": backing.url, "PROXY_HOST": "127.0.0.1"}
    env |= {"PROXY_PORT": str(reserve_port()), "RESP_PORT": str(reserve_port())}
    log = scratch / f"{Path(config).stem}-{reserve_port()}.log"
    return Proxy(env, log, config=config, root=root, tls=client_tls).start()


def seed(client: redis.Redis) -> None:
    """Every key a scenario reads: the large cache's million (which include the HTTP and
    memory scenarios' keys) and the cold MGETs' own."""
    seed_range(client, 0, max(SPREAD_KEYS, MEMORY_ENTRIES, LARGE))
    seed_range(client, MGET_FIRST_KEY, MGET_FIRST_KEY + cold_keys_needed())


def warm(*proxies: Proxy) -> None:
    """Every key the HTTP scenarios read, cached in each of `proxies`."""
    for proxy in proxies:
        client = redis.Redis(
            port=proxy.resp_port,
            password=proxy.password or None,
            ssl=proxy.tls is not None,
            ssl_cert_reqs="none",
        )
        for start_at in range(0, HTTP_KEYS, 500):
            client.mget([key_name(i) for i in range(start_at, start_at + 500)])


def warm_varnish(url: str) -> None:
    """Every key the HTTP scenarios read, once through Varnish: from then on all are hits."""
    local = threading.local()

    def read(number: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        assert session.get(url + webdis_path(key_name(number)), timeout=10).content == VALUE

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(HTTP_KEYS)))
    # A hit names two transactions in X-Varnish: this one and the one that fetched the object.
    header = requests.get(url + webdis_path(key_name(0)), timeout=10).headers["X-Varnish"]
    assert len(header.split()) == 2, f"Varnish did not answer from its cache: {header}"


def progress(result: Result, prefix: str = "") -> Result:
    print(f"  {prefix}{result.describe()}", flush=True)
    return result


Measure = Callable[[int], Result]  # runs one scenario for the given seconds


def interleaved(
    measures: list[Measure], before_round: Callable[[], None], alternate: bool = False
) -> list[Result]:
    """Each measure once per round, in turn (in reverse order every other round if
    `alternate`, so that going first or last favours no one). Each keeps its median round (by
    throughput) and every round's throughput, from which round-by-round ratios are taken."""
    rounds: list[list[Result]] = []
    for number in range(1, ROUNDS + 1):
        before_round()
        order = list(range(len(measures)))
        if alternate and number % 2 == 0:
            order.reverse()
        results: dict[int, Result] = {}
        for index in order:
            results[index] = progress(measures[index](ROUND_SECONDS), f"round {number}/{ROUNDS}: ")
        rounds.append([results[index] for index in range(len(measures))])
    return [progress(median(list(runs)), "median: ") for runs in zip(*rounds, strict=True)]


def median(runs: list[Result]) -> Result:
    """The median round (the lower middle one for an even count), a real round so that its
    latencies come with it, carrying every round's throughput."""
    by_rate = sorted(runs, key=lambda run: run.value)
    middle = by_rate[(len(by_rate) - 1) // 2]
    return dataclasses.replace(middle, rounds=tuple(run.value for run in runs))


# HTTP, with wrk and a Lua script choosing keys.


def wrk_script(scratch: Path, name: str, keys: int, path: str = "/get/key:%012d") -> Path:
    """A wrk script asking for a random one of `keys` keys per request, at `path`. Each wrk
    thread draws its own sequence: with one shared seed, every thread would ask for the same
    keys, and all but the first request for each would be a hit even in the miss scenario."""
    script = scratch / f"{name}.lua"
    script.write_text(
        "local threads = 0\n"
        "function setup(thread)\n"
        '  thread:set("id", threads)\n'
        "  threads = threads + 1\n"
        "end\n"
        "function init(args)\n"
        f"  math.randomseed({len(name)} + 7919 * id)\n"
        "end\n"
        "request = function()\n"
        f'  return wrk.format("GET", string.format("{path}", math.random(0, {keys - 1})))\n'
        "end\n"
    )
    return script


def wrk(
    name: str,
    url: str,
    script: Path,
    connections: int,
    floor: str | None,
    *,
    anchor: bool = False,
    password: str = "",
) -> Measure:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", "--latency"]
    command += ["-s", str(script)]
    if password:
        command += ["-H", f"Authorization: Bearer {password}"]

    def measure(seconds: int) -> Result:
        out = subprocess.run(
            [*command, f"-d{seconds}s", url], capture_output=True, text=True, check=True
        ).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        assert errors is None, f"{name}: {errors.group(1)} failed requests"
        p50, p99 = (_wrk_ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out)) for p in ("50", "99"))
        return Result(
            name, connections, rate, p50, p99, floor, role="anchor" if anchor else "proxy"
        )

    return measure


def _wrk_ms(match: re.Match[str] | None) -> float:
    assert match is not None
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", match.group(1)).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def http_scenarios(
    scratch: Path, proxies: tuple[Proxy, ...], floor: Proxy, anchors: Anchors
) -> list[Result]:
    """`proxies`: the proxy at MAX_PARALLEL=1, as configured, with a password, with TLS and
    a password, and with a million keys cached."""
    sequential, proxy, secured, over_tls, large = proxies
    cached = wrk_script(scratch, "cached", HTTP_KEYS)
    spread = wrk_script(scratch, "spread", SPREAD_KEYS)
    on_webdis = wrk_script(scratch, "webdis", HTTP_KEYS, webdis_path("key:%012d"))
    results = []
    million = wrk_script(scratch, "million", LARGE)
    for connections in (1, 10, 50):  # misses at 1, 10 and 50 clients (bench/scaling.py)
        measures = [
            wrk("HTTP floor (minimal Flask)", floor.url, cached, connections, None),
            wrk("HTTP hit", proxy.url, cached, connections, "HTTP floor (minimal Flask)"),
            wrk("HTTP miss", proxy.url, spread, connections, "HTTP hit"),
        ]
        if connections == 50:  # where the targets are: what a user would run instead
            measures.append(wrk(HIT_SEQUENTIAL, sequential.url, cached, connections, None))
            measures.append(wrk(HIT_LARGE, large.url, million, connections, "HTTP hit"))
            for name, server in ((HIT_PASSWORD, secured), (HIT_TLS, over_tls)):
                measures.append(
                    wrk(name, server.url, cached, connections, "HTTP hit", password=PASSWORD)
                )
            measures.append(
                wrk(VARNISH, anchors.varnish_url, on_webdis, connections, None, anchor=True)
            )
            measures.append(
                wrk(WEBDIS, anchors.webdis_url, on_webdis, connections, None, anchor=True)
            )
        # Misses evict cached keys: every round starts with them all cached again.
        results += interleaved(measures, partial(warm, *proxies[:4]))
    return results


# RESP, with redis-benchmark against the proxy and against redis-server itself.


def redis_benchmark(
    name: str,
    port: int,
    connections: int,
    pipeline: int,
    floor: str | None,
    *,
    role: str = "proxy",
    password: str = "",
) -> Measure:
    command = ["redis-benchmark", "-p", str(port), "-t", "get", "-c", str(connections)]
    command += ["-P", str(pipeline), "-r", str(HOT_KEYS), "--csv"]
    if password:
        command += ["-a", password]
    label = f"{name}, pipelined {pipeline}" if pipeline > 1 else name

    def run(requests_: int) -> list[str]:
        for attempt in (1, 2):  # it has exited 1 once in a long run, with nothing to show why
            done = subprocess.run(
                [*command, "-n", str(requests_)], check=False, capture_output=True, text=True
            )
            if done.returncode == 0:
                return done.stdout.strip().splitlines()[-1].replace('"', "").split(",")
            print(
                f"  {label}: redis-benchmark exited {done.returncode} (attempt {attempt}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}",
                flush=True,
            )
        raise RuntimeError(f"{label}: redis-benchmark failed twice")

    calibrated: list[float] = []  # req/s in a short first run, to size every round's run

    def measure(seconds: int) -> Result:
        # redis-benchmark takes a request count, not a duration: calibrate once, then scale.
        if not calibrated:
            calibrated.append(float(run(2_000 * pipeline)[1]))
        fields = run(max(1_000, int(calibrated[0] * seconds)))
        rate, p50, p99 = float(fields[1]), float(fields[4]), float(fields[6])
        return Result(label, connections, rate, p50, p99, floor, role=role)

    return measure


def resp_scenarios(
    proxies: tuple[Proxy, Proxy], backing: RedisServer, ceiling_port: int, anchors: Anchors
) -> list[Result]:
    """`proxies`: the proxy as configured, and with a password."""
    proxy, secured = proxies
    results = []
    for pipeline in (1, 16):
        for connections in (1, 50):
            direct = "redis-server direct" + (f", pipelined {pipeline}" if pipeline > 1 else "")
            measures = [
                redis_benchmark("redis-server direct", backing.port, connections, pipeline, None),
                redis_benchmark("RESP hit", proxy.resp_port, connections, pipeline, direct),
            ]
            if connections == 50:  # where the targets are: a RESP proxy, and any Python server
                hit = "RESP hit" + (f", pipelined {pipeline}" if pipeline > 1 else "")
                measures.append(
                    redis_benchmark(
                        RESP_PASSWORD, secured.resp_port, 50, pipeline, hit, password=PASSWORD
                    )
                )
                measures.append(
                    redis_benchmark(
                        TWEMPROXY,
                        anchors.twemproxy_port,
                        connections,
                        pipeline,
                        direct,
                        role="anchor",
                    )
                )
                measures.append(
                    redis_benchmark(
                        CEILING, ceiling_port, connections, pipeline, direct, role="ceiling"
                    )
                )
            results += interleaved(measures, partial(warm, *proxies))
    return results


# One cold key, 100 concurrent readers: how many GETs reach Redis?


def coalescing(proxy: Proxy, backing: RedisServer) -> Result:
    backing.client.set("cold:coalesce", VALUE)
    before = backing.get_calls()
    backing.client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # let all 100 pile up
    barrier = threading.Barrier(100)

    def read() -> int:
        barrier.wait()
        return requests.get(f"{proxy.url}/get/cold:coalesce", timeout=10).status_code

    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(read())) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert codes == [200] * 100, codes
    gets = backing.get_calls() - before
    return progress(Result("100 concurrent misses on one key", 100, gets, 0, 0, None, "GETs"))


# Memory: the worker's RSS empty and with MEMORY_ENTRIES cached 100-byte values.


def memory(scratch: Path, backing: RedisServer) -> Result:
    proxy = start(
        scratch,
        backing,
        "gunicorn.conf.py",
        {**PROXY_SETTINGS, "CACHE_MAXSIZE": str(MEMORY_ENTRIES)},
    )
    try:
        client = redis.Redis(port=proxy.resp_port)
        client.mget([key_name(0)])  # every code path loaded before the first reading
        empty = rss_bytes(proxy.worker_pid())
        for start_at in range(0, MEMORY_ENTRIES, 1_000):
            client.mget([key_name(i) for i in range(start_at, start_at + 1_000)])
        assert proxy.metric("proxy_cache_entries") == MEMORY_ENTRIES
        full = rss_bytes(proxy.worker_pid())
    finally:
        proxy.stop()
    key_and_value = len(key_name(0)) + len(VALUE)
    per_entry = (full - empty) / MEMORY_ENTRIES - key_and_value
    return progress(
        Result("memory per cached entry", 0, per_entry, 0, 0, None, "bytes beyond key+value")
    )


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench: done in {time.monotonic() - started:.0f} s")
    sys.exit(code)
