"""The monitoring kit (monitoring/) against the real tools: promtool checks and unit-tests every
alerting rule, and a real Prometheus scrapes a live proxy while every query of the Grafana
dashboard is evaluated through its HTTP API and must return data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import requests

from harness.servers import PrometheusServer, poll

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "redis-cache-proxy.json"
ALERTS = MONITORING / "alerts.yml"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian: prometheus) not installed")
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, check=False
    )


def test_the_alerting_rules_are_valid() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


def test_every_alert_passes_its_unit_tests() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set((MONITORING / "alerts.test.yml").read_text().split())
    defined = [word for word in ALERTS.read_text().split() if word.startswith("RedisCacheProxy")]
    assert defined and set(defined) <= tested_alerts  # every alert has a test


def test_every_dashboard_query_returns_data_from_a_live_proxy(
    tmp_path: Path, start_proxy, redis_server, key
) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus (Debian: prometheus) not installed")
    proxy = start_proxy(redis_server, cache_invalidation="tracking")
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{proxy.port}"], [ALERTS])
    prometheus.start()
    try:
        redis_server.client.set(key(), b"value")
        resp = redis.Redis(port=proxy.resp_port, socket_timeout=5)
        with requests.Session() as session:

            def scraped_with_traffic() -> bool:  # reads between scrapes, so rates are not 0
                session.get(f"{proxy.url}/get/{key()}", timeout=5)
                session.get(f"{proxy.url}/get/{key('absent')}", timeout=5)
                resp.get(key())
                samples = prometheus.query("count_over_time(proxy_cache_entries[1m])")
                return bool(samples) and float(samples[0]["value"][1]) >= 4

            poll(scraped_with_traffic, 30, "four scrapes of a proxy under traffic")
        empty = [(title, expr) for title, expr in dashboard_queries() if not prometheus.query(expr)]
        assert empty == []
        rules = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()
        loaded = [rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]]
        assert len(loaded) == 5
    finally:
        prometheus.stop()
