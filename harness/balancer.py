"""A real HAProxy in front of proxies, with the repository's own deploy/haproxy.cfg.

The config takes its addresses from the environment (HAPROXY_BIND, HAPROXY_STATS_BIND,
PROXY1..PROXY3); with fewer proxies, the entries take them in turn (one proxy: all three).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import requests

from harness.servers import ROOT, Proxy, poll, reserve_port, stop_group

CONFIG = ROOT / "deploy" / "haproxy.cfg"
SERVERS = 3  # `server` lines in the config


class HAProxy:
    """`haproxy -db -f deploy/haproxy.cfg` in front of `proxies`, by handle."""

    def __init__(self, proxies: Sequence[Proxy], log_path: Path) -> None:
        self.port, self.stats_port = reserve_port(), reserve_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{self.stats_port}",
        }
        for number in range(SERVERS):
            self.env[f"PROXY{number + 1}"] = f"127.0.0.1:{proxies[number % len(proxies)].port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["haproxy", "-db", "-f", str(CONFIG)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        poll(lambda: self.servers_up() == SERVERS, 15, "HAProxy to see every proxy up")
        return self

    def servers_up(self) -> int:
        """Servers of the `proxies` backend HAProxy counts as up (its stats CSV)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{self.log_path.read_text()}")
        try:
            text = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2).text
        except requests.RequestException:
            return 0
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return sum(
            1
            for row in rows
            if row["pxname"] == "proxies"
            and row["svname"].startswith("proxy")
            and row["status"] == "UP"
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
