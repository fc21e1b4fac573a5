"""Closed by default, against the production start: a password on both front ends, a key
allowlist, TLS (and mutual TLS) on both listeners, with real clients: requests, curl, redis-py,
redis-cli. Every refusal gets its exact answer and the proxy keeps serving everyone else."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.certs import Certificates, make_certificates

PASSWORD = "s3cret-Pw"
NOAUTH = "Authentication required."
ONCE = Retry(NoBackoff(), 0)  # redis-py would retry a failed AUTH ten times
WRONGPASS = "invalid username-password pair or user is disabled."


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=20, input=stdin
    )


def redis_cli_speaks_tls() -> bool:
    return shutil.which("redis-cli") is not None and "--tls" in run("redis-cli", "--help").stderr


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


def test_a_password_guards_both_front_ends(start_proxy, redis_server, key, tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")  # as a Docker or Kubernetes secret file holds it
    redis_server.client.set(key("a"), b"value")
    proxy = start_proxy(redis_server, proxy_password_file=secret)
    url = f"{proxy.url}/get/{key('a')}"
    missing = requests.get(url, timeout=10)
    assert (missing.status_code, missing.json()["error"]) == (401, "auth_required")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert (wrong.status_code, wrong.json()["error"]) == (401, "wrong_password")
    bearer = requests.get(url, headers={"Authorization": f"Bearer {PASSWORD}"}, timeout=10)
    assert (bearer.status_code, bearer.content) == (200, b"value")
    assert requests.get(url, auth=("default", PASSWORD), timeout=10).content == b"value"
    curl = run("curl", "-s", "-H", f"Authorization: Bearer {PASSWORD}", url)
    assert curl.stdout == "value"  # a hit, answered on the loop with the password checked
    for probe in ("/livez", "/readyz"):
        assert requests.get(proxy.url + probe, timeout=10).status_code == 200
    assert requests.get(proxy.url + "/metrics", timeout=10).status_code == 401

    port = proxy.resp_port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5).get(key("a"))
    with pytest.raises(redis.AuthenticationError, match=WRONGPASS):
        redis.Redis(port=port, password="nope", socket_timeout=5, retry=ONCE).get(key("a"))
    for user in (None, "default"):
        for protocol in (2, 3):
            client = redis.Redis(
                port=port, protocol=protocol, socket_timeout=5, username=user, password=PASSWORD
            )
            assert client.get(key("a")) == b"value"
    if shutil.which("redis-cli"):
        cli = ("redis-cli", "-p", str(port), "--no-auth-warning")
        assert run(*cli, "-a", PASSWORD, "GET", key("a")).stdout.strip() == "value"
        assert NOAUTH in run(*cli, "GET", key("a")).stdout

    proxy.password = PASSWORD  # from here on, proxy.get() and proxy.metric() send it
    # the readiness probe's request, the read without a password, /metrics
    assert proxy.metric("proxy_access_refusals_total", protocol="http", reason="no_password") == 3
    assert (
        proxy.metric("proxy_access_refusals_total", protocol="resp", reason="wrong_password") == 1
    )
    log = proxy.log()
    assert PASSWORD not in log
    assert "PROXY_PASSWORD=*** PROXY_PASSWORD_FILE=" in log
    assert "HTTP client 127.0.0.1 refused: no_password" in log


def test_a_key_outside_key_patterns_is_refused_and_never_fetched(
    start_proxy, redis_server, key
) -> None:
    allowed, forbidden = key("user:1"), key("secret")
    for name in (allowed, forbidden):
        redis_server.client.set(name, b"value")
    proxy = start_proxy(redis_server, key_patterns=f"{key('user:')}*, other")
    before = redis_server.get_calls()
    assert requests.get(f"{proxy.url}/get/{allowed}", timeout=10).content == b"value"
    refused = requests.get(f"{proxy.url}/get/{forbidden}", timeout=10)
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden_key")
    client = redis.Redis(port=proxy.resp_port, socket_timeout=5)
    assert client.get(allowed) == b"value"
    for read in (lambda: client.get(forbidden), lambda: client.mget(allowed, forbidden)):
        with pytest.raises(redis.exceptions.NoPermissionError, match="No permissions"):
            read()
    assert client.ping() is True  # the connection stays
    assert redis_server.get_calls() - before == 1  # the allowed key, once; never the other
    assert proxy.metric("proxy_access_refusals_total", protocol="resp", reason="forbidden_key") == 2


def client_context(certs: Certificates, pair: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if pair is not None:
        chosen = getattr(certs, pair)
        context.load_cert_chain(str(chosen.cert), str(chosen.key))
    return context


def tls_settings(certs: Certificates, mutual: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {
        "tls_cert_file": certs.server.cert,
        "tls_key_file": certs.server.key,
    }
    if mutual:
        settings["tls_ca_file"] = certs.ca
    return settings


def plaintext_is_closed(port: int, request: bytes) -> bool:
    """A plaintext client on a TLS port: closed (FIN or reset), never answered in clear."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        try:
            answer = sock.recv(4096)
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            return True
    return not answer.startswith((b"HTTP/", b"+", b"-", b"$"))


def test_tls_on_both_front_ends(start_proxy, redis_server, key, certs) -> None:
    redis_server.client.set(key("a"), b"value")
    proxy = start_proxy(redis_server, client_tls=client_context(certs), **tls_settings(certs))
    assert proxy.url.startswith("https://")
    url = f"{proxy.url}/get/{key('a')}"
    for _ in range(2):  # a miss through Flask, then a hit on the loop
        assert requests.get(url, verify=str(certs.ca), timeout=10).content == b"value"
    curl = run("curl", "-s", "--cacert", str(certs.ca), url)
    assert curl.stdout == "value", curl.stderr
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)  # the system's CAs do not know the test CA
    resp = redis.Redis(port=proxy.resp_port, ssl=True, ssl_ca_certs=str(certs.ca), socket_timeout=5)
    assert resp.get(key("a")) == b"value"
    assert resp.mget(key("a"), key("absent")) == [b"value", None]
    if redis_cli_speaks_tls():
        cli = run(
            "redis-cli",
            "--tls",
            "--cacert",
            str(certs.ca),
            "-p",
            str(proxy.resp_port),
            "GET",
            key("a"),
        )
        assert cli.stdout.strip() == "value", cli.stderr
    assert plaintext_is_closed(proxy.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert plaintext_is_closed(proxy.resp_port, b"PING\r\n")
    assert requests.get(url, verify=str(certs.ca), timeout=10).status_code == 200  # still serving
    assert resp.ping() is True


@pytest.mark.skipif(not redis_cli_speaks_tls(), reason="this redis-cli was built without TLS")
def test_redis_cli_with_a_password_over_tls(start_proxy, redis_server, key, certs) -> None:
    redis_server.client.set(key("a"), b"value")
    proxy = start_proxy(
        redis_server,
        client_tls=client_context(certs),
        proxy_password=PASSWORD,
        **tls_settings(certs),
    )
    cli = ("redis-cli", "--tls", "--cacert", str(certs.ca), "-p", str(proxy.resp_port))
    answer = run(*cli, "--no-auth-warning", "-a", PASSWORD, "GET", key("a"))
    assert answer.stdout.strip() == "value", answer.stderr


def test_mutual_tls_requires_a_certificate_signed_by_the_ca(
    start_proxy, redis_server, key, certs
) -> None:
    redis_server.client.set(key("a"), b"value")
    proxy = start_proxy(
        redis_server, client_tls=client_context(certs, "client"), **tls_settings(certs, mutual=True)
    )
    url = f"{proxy.url}/get/{key('a')}"
    mine = (str(certs.client.cert), str(certs.client.key))
    stranger = (str(certs.stranger.cert), str(certs.stranger.key))
    assert requests.get(url, verify=str(certs.ca), cert=mine, timeout=10).content == b"value"
    curl = run("curl", "-s", "--cacert", str(certs.ca), "--cert", mine[0], "--key", mine[1], url)
    assert curl.stdout == "value", curl.stderr
    for cert in (None, stranger):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(url, verify=str(certs.ca), cert=cert, timeout=10)

    def resp(certfile: str | None, keyfile: str | None) -> redis.Redis:
        return redis.Redis(
            port=proxy.resp_port,
            ssl=True,
            ssl_ca_certs=str(certs.ca),
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            socket_timeout=5,
        )

    good = resp(*mine)
    assert good.get(key("a")) == b"value"
    for certfile, keyfile in ((None, None), stranger):
        with pytest.raises(redis.ConnectionError):
            resp(certfile, keyfile).get(key("a"))
    assert good.get(key("a")) == b"value"  # everyone else still served
