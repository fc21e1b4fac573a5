"""The servers `make bench` measures the proxy against: what a user would run instead.

* webdis (Debian `webdis`): HTTP in front of Redis, no cache, written in C;
* Varnish (Debian `varnish`) in front of webdis: the HTTP cache a user would pick, warmed so
  that every measured request is a hit;
* twemproxy (Debian `nutcracker`): a RESP proxy in front of Redis, no cache.

Each runs as its own process group on reserved loopback ports, is waited for with a deadline
and is stopped by its handle. varnishd drops privileges to its own user, so its VCL and working
directory live in a directory of their own that user can read, not in the caller's scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from harness.servers import ready_or_stopped, reserve_port, stop_group

# The anchors' names in the benchmark's results.
VARNISH = "Varnish (in front of webdis)"
WEBDIS = "webdis"
TWEMPROXY = "twemproxy"
# The programs, and the Debian packages that have them.
PROGRAMS = {"webdis": "webdis", "varnishd": "varnish", "nutcracker": "nutcracker"}
VARNISH_TTL_SECONDS = 600  # longer than any benchmark run: every warmed key stays a hit
VARNISH_STORAGE = "malloc,256m"


@dataclass(frozen=True)
class Anchors:
    """Where the anchors listen."""

    webdis_url: str
    varnish_url: str
    twemproxy_port: int


def missing_programs() -> list[str]:
    """The Debian packages to install for the programs that are not on PATH."""
    return [package for program, package in PROGRAMS.items() if shutil.which(program) is None]


def webdis_path(key: str) -> str:
    """The path webdis answers a key's raw value on (`.txt`: the value as it is, not JSON)."""
    return f"/GET/{key}.txt"


class Process:
    """One anchor process in its own process group; its output goes to `log`."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command, self.log = command, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, answers: Callable[[], bool], what: str) -> Process:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def answers_or_exited() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{what} exited:\n{self.log.read_text(errors='replace')}")
            return answers()

        ready_or_stopped(answers_or_exited, self.stop, what)
        return self

    def stop(self) -> None:
        if self.popen is not None:
            stop_group(self.popen)  # varnishd's child is in the group too


def _http_answers(url: str) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return answers


def start_webdis(scratch: Path, redis_port: int) -> tuple[Process, str]:
    port = reserve_port()
    config = scratch / "webdis.json"
    settings = {"redis_host": "127.0.0.1", "redis_port": redis_port, "http_host": "127.0.0.1"}
    settings |= {"http_port": port, "threads": 2, "daemonize": False, "database": 0}
    settings |= {"verbosity": 1, "logfile": str(scratch / "webdis.log")}
    config.write_text(json.dumps(settings))
    url = f"http://127.0.0.1:{port}"
    process = Process(["webdis", str(config)], scratch / "webdis.out")
    return process.start(_http_answers(url + "/PING"), f"webdis on port {port}"), url


def start_varnish(home: Path, backend_url: str) -> tuple[Process, str]:
    port = reserve_port()
    backend = backend_url.removeprefix("http://").split(":")
    vcl = home / "bench.vcl"
    vcl.write_text(
        "vcl 4.1;\n"
        f'backend webdis {{ .host = "{backend[0]}"; .port = "{backend[1]}"; }}\n'
        f"sub vcl_backend_response {{ set beresp.ttl = {VARNISH_TTL_SECONDS}s; }}\n"
    )
    vcl.chmod(0o644)
    command = ["varnishd", "-F", "-a", f"127.0.0.1:{port}", "-f", str(vcl)]
    command += ["-n", str(home / "work"), "-s", VARNISH_STORAGE, "-T", "127.0.0.1:0"]
    if os.geteuid() != 0:
        command += ["-j", "none"]  # no privileges to drop
    url = f"http://127.0.0.1:{port}"
    process = Process(command, home / "varnishd.out")
    return process.start(_http_answers(url + "/PING"), f"varnishd on port {port}"), url


def start_twemproxy(scratch: Path, redis_port: int) -> tuple[Process, int]:
    port, stats_port = reserve_port(), reserve_port()
    config = scratch / "twemproxy.yml"
    config.write_text(
        "anchor:\n"
        f"  listen: 127.0.0.1:{port}\n"
        "  redis: true\n"
        "  hash: fnv1a_64\n"
        "  distribution: ketama\n"
        "  servers:\n"
        f"    - 127.0.0.1:{redis_port}:1\n"
    )
    command = ["nutcracker", "-c", str(config), "-o", str(scratch / "twemproxy.log")]
    command += ["-a", "127.0.0.1", "-s", str(stats_port)]
    # No CLIENT SETINFO on connect: twemproxy closes the connection on commands it lacks.
    client = redis.Redis(port=port, socket_timeout=2, protocol=2, lib_name=None, lib_version=None)

    def answers() -> bool:
        try:
            return client.get("anchor:probe") is None
        except redis.RedisError:
            return False

    process = Process(command, scratch / "twemproxy.out")
    return process.start(answers, f"nutcracker on port {port}"), port


@contextmanager
def running_anchors(scratch: Path, redis_port: int) -> Iterator[Anchors]:
    """webdis and Varnish in front of it, and twemproxy, all over the Redis on `redis_port`."""
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="bench-varnish-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        home.chmod(0o755)  # varnishd's own user reads the VCL and writes its work dir here
        webdis, webdis_url = start_webdis(scratch, redis_port)
        stack.callback(webdis.stop)
        varnish, varnish_url = start_varnish(home, webdis_url)
        stack.callback(varnish.stop)
        twemproxy, twemproxy_port = start_twemproxy(scratch, redis_port)
        stack.callback(twemproxy.stop)
        yield Anchors(webdis_url, varnish_url, twemproxy_port)
