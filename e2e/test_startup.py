"""Black box: the production start command refuses bad configuration before any worker."""

from __future__ import annotations

import pytest

from harness.servers import Proxy, reserve_port


@pytest.mark.parametrize(
    "bad",
    [
        {"CACHE_TTL": "0"},
        {"CACHE_MAXSIZE": "-1", "MAX_PARALLEL": "many", "REDIS_URL": "http://nope"},
        {"PROXY_PORT": "70000"},
    ],
)
def test_bad_configuration_exits_non_zero_naming_each_variable(tmp_path, bad) -> None:
    env = {"PROXY_PORT": str(reserve_port()), "RESP_PORT": str(reserve_port()), **bad}
    process = Proxy(env, tmp_path / "proxy.log").spawn()
    exit_code = process.wait(timeout=15)
    output = (tmp_path / "proxy.log").read_text()
    assert exit_code != 0
    for variable, value in bad.items():
        assert f"{variable}={value!r}: expected" in output
    assert "Booting worker" not in output
    assert "Traceback" not in output
