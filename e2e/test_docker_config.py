"""The compose file as Compose renders it from a user's `.env`: every setting reaches the proxy
as it would locally, but for the five the README lists (the container's own addresses), and
the ports are published where the README says. Needs Compose (v2 or v1), not an engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Set by the compose file whatever `.env` says: inside the container the proxy listens on every
# interface at fixed ports, and reads the compose Redis.
FIXED = {
    "REDIS_URL": "redis://redis:6379/0",
    "PROXY_HOST": "0.0.0.0",
    "PROXY_PORT": "8080",
    "RESP_PORT": "6380",
    "PROTECTED_MODE": "no",
}
USER_ENV = {
    "REDIS_URL": "redis://10.1.2.3:6379/2",
    "PROXY_PORT": "9000",
    "RESP_PORT": "9001",
    "CACHE_TTL": "5",
    "CACHE_MAXSIZE": "77",
    "CACHE_INVALIDATION": "tracking",
    "ACCESS_LOG": "raw",
}


def compose() -> list[str] | None:
    """Compose v2 (`docker compose`) where present, else v1 (`docker-compose`), as make does."""
    docker = shutil.which("docker")
    if docker:
        v2 = subprocess.run([docker, "compose", "version"], check=False, capture_output=True)
        if v2.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def rendered(directory: Path, env_file: dict[str, str], **variables: str) -> dict[str, Any]:
    """`compose config` of a copy of the compose file beside an `.env` holding `env_file`."""
    command = compose()
    if command is None:
        pytest.skip("no docker compose or docker-compose")
    shutil.copy(ROOT / "docker-compose.yml", directory)
    (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    done = subprocess.run(
        [*command, "config"],
        cwd=directory,
        env={"PATH": str(Path(command[0]).parent), **variables},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(yaml.safe_load(done.stdout))


def published(port: Any) -> tuple[str, str, str]:
    """(host address, host port, container port) of a rendered port, in either Compose's form."""
    if isinstance(port, dict):  # v2: the long syntax
        return str(port.get("host_ip", "")), str(port["published"]), str(port["target"])
    host, outside, inside = str(port).removesuffix("/tcp").split(":")
    return host, outside, inside


def test_every_setting_reaches_the_proxy_but_the_container_addresses(tmp_path: Path) -> None:
    proxy = rendered(tmp_path, USER_ENV)["services"]["proxy"]
    environment = {name: str(value) for name, value in proxy["environment"].items()}
    assert environment == {**USER_ENV, **FIXED}


def test_ports_are_published_on_loopback_at_the_user_s_ports(tmp_path: Path) -> None:
    proxy = rendered(tmp_path, USER_ENV)["services"]["proxy"]
    assert sorted(published(port) for port in proxy["ports"]) == [
        ("127.0.0.1", "9000", "8080"),
        ("127.0.0.1", "9001", "6380"),
    ]


def test_publish_address_and_base_images_can_be_chosen(tmp_path: Path) -> None:
    services = rendered(
        tmp_path,
        {},
        PUBLISH_ADDRESS="0.0.0.0",
        PYTHON_IMAGE="standin/python:3.11",
        REDIS_IMAGE="standin/redis:7",
    )["services"]
    assert {published(port)[0] for port in services["proxy"]["ports"]} == {"0.0.0.0"}
    assert services["proxy"]["build"]["args"]["PYTHON_IMAGE"] == "standin/python:3.11"
    assert services["e2e"]["build"]["args"]["PYTHON_IMAGE"] == "standin/python:3.11"
    assert services["redis"]["image"] == "standin/redis:7"


def test_by_default_the_official_images_are_named(tmp_path: Path) -> None:
    services = rendered(tmp_path, {})["services"]
    assert services["proxy"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    assert services["redis"]["image"].startswith("redis:7")
