"""Settings: defaults, validation that reports every problem at once, and `.env` parsing."""

from __future__ import annotations

import re
import resource
import ssl
from pathlib import Path

import pytest

from harness.certs import make_certificates
from proxy.config import (
    RESERVED_DESCRIPTORS,
    ConfigError,
    Settings,
    ensure_descriptors,
    read_dotenv,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(
        redis_url="redis://127.0.0.1:6379/0",
        redis_sentinels=(),
        redis_sentinel_master="",
        redis_cluster=False,
        proxy_host="127.0.0.1",
        proxy_port=8080,
        cache_ttl=60.0,
        cache_maxsize=10000,
        cache_negative_ttl=0.0,
        cache_stale_if_error=0.0,
        cache_maxbytes=268435456,
        cache_max_item_bytes=1048576,
        max_parallel=4,
        max_connections=100,
        redis_timeout=1.0,
        resp_port=6380,
        keepalive_timeout=5,
        resp_idle_timeout=300,
        log_level="info",
        access_log="hashed",
        cache_invalidation="none",
        graceful_timeout=10,
        proxy_password="",
        proxy_password_file="",
        protected_mode=True,
        tls_cert_file="",
        tls_key_file="",
        tls_ca_file="",
        key_patterns=("*",),
    )


def test_dotenv_file_repeats_the_code_defaults() -> None:
    assert Settings.from_env(read_dotenv(PROJECT_ROOT / ".env")) == Settings.from_env({})


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {"CACHE_TTL": "0.25", "CACHE_MAXSIZE": "3", "MAX_PARALLEL": "1", "PROXY_PORT": "9000"}
    )
    assert (settings.cache_ttl, settings.cache_maxsize) == (0.25, 3)
    assert (settings.max_parallel, settings.proxy_port) == (1, 9000)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:s3cret@cache.example:6380/2",
        "redis://:pw@127.0.0.1",
        "unix:///run/redis.sock",
    ],
)
def test_accepted_redis_urls(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "redis://host:notaport"),
        ("REDIS_URL", "localhost:6379"),
        ("PROXY_HOST", ""),
        ("PROXY_PORT", "0"),
        ("PROXY_PORT", "65536"),
        ("PROXY_PORT", "http"),
        ("CACHE_TTL", "0"),
        ("CACHE_TTL", "-1"),
        ("CACHE_TTL", "inf"),
        ("CACHE_TTL", "nan"),
        ("CACHE_TTL", "soon"),
        ("CACHE_MAXSIZE", "0"),
        ("CACHE_MAXSIZE", "1.5"),
        ("REDIS_SENTINELS", "sentinel"),
        ("REDIS_SENTINELS", "sentinel:0"),
        ("REDIS_SENTINELS", "a:26379,b:port"),
        ("REDIS_CLUSTER", "maybe"),
        ("CACHE_STALE_IF_ERROR", "-1"),
        ("CACHE_STALE_IF_ERROR", "inf"),
        ("CACHE_STALE_IF_ERROR", "a while"),
        ("MAX_PARALLEL", "0"),
        ("MAX_CONNECTIONS", "-3"),
        ("REDIS_TIMEOUT", "0"),
        ("RESP_PORT", "-1"),
        ("RESP_PORT", "8080"),
        ("KEEPALIVE_TIMEOUT", "0"),
        ("KEEPALIVE_TIMEOUT", "2.5"),
        ("LOG_LEVEL", "verbose"),
        ("ACCESS_LOG", "everything"),
        ("GRACEFUL_TIMEOUT", "0"),
        ("CACHE_INVALIDATION", "bcast"),
    ],
)
def test_invalid_value_names_variable_value_and_expectation(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    [problem] = caught.value.problems
    assert problem.startswith(f"{variable}={value!r}: expected ")


def test_every_invalid_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CACHE_TTL": "0", "MAX_PARALLEL": "x", "REDIS_URL": "nope"})
    reported = {problem.split("=")[0] for problem in caught.value.problems}
    assert reported == {"CACHE_TTL", "MAX_PARALLEL", "REDIS_URL"}


def test_ipv6_host_is_bracketed_for_gunicorn() -> None:
    assert Settings.from_env({"PROXY_HOST": "::1", "PROXY_PORT": "81"}).bind == "[::1]:81"


def test_dotenv_parsing(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n\nA=1\nexport B = two \nC='quoted # not a comment'\nD=\"x=y\"\nnot a pair\n"
    )
    assert read_dotenv(dotenv) == {"A": "1", "B": "two", "C": "quoted # not a comment", "D": "x=y"}


def test_missing_dotenv_is_empty(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / "absent") == {}


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("CACHE_TTL=5\nCACHE_MAXSIZE=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHE_TTL", "9")
    monkeypatch.delenv("CACHE_MAXSIZE", raising=False)
    settings = Settings.load()
    assert (settings.cache_ttl, settings.cache_maxsize) == (9.0, 7)


def test_resp_port_zero_disables_resp() -> None:
    assert Settings.from_env({"RESP_PORT": "0"}).resp_port == 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:s3cret@host", "rediss://:***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_password_is_masked_in_the_description(url: str, shown: str) -> None:
    description = Settings.from_env({"REDIS_URL": url}).describe()
    assert f"REDIS_URL={shown} " in description
    assert "s3cret" not in description


def test_descriptors_needed_counts_both_front_ends_lingering_and_redis() -> None:
    settings = Settings.from_env({"MAX_CONNECTIONS": "100", "MAX_PARALLEL": "4"})
    assert settings.descriptors_needed == 4 * 100 + 2 * 4 + RESERVED_DESCRIPTORS


def test_descriptors_within_the_soft_limit_change_nothing() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_descriptors(min(soft, 100)) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_descriptors_past_the_hard_limit_are_a_config_error_naming_the_numbers() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    with pytest.raises(ConfigError, match=rf"the limit is {hard} \(hard\) but .* need {hard + 1}"):
        ensure_descriptors(hard + 1)


def test_the_negative_ttl_is_at_most_the_ttl() -> None:
    with pytest.raises(ConfigError, match=r"CACHE_NEGATIVE_TTL='20': expected at most CACHE_TTL"):
        Settings.from_env({"CACHE_TTL": "10", "CACHE_NEGATIVE_TTL": "20"})


def test_sentinels_are_parsed_ipv6_included() -> None:
    settings = Settings.from_env(
        {"REDIS_SENTINELS": "s1:26379, [::1]:26380,", "REDIS_SENTINEL_MASTER": "mymaster"}
    )
    assert settings.redis_sentinels == (("s1", 26379), ("::1", 26380))
    assert (settings.redis_sentinel_master, settings.sentinel) == ("mymaster", True)
    assert "REDIS_SENTINELS=s1:26379,[::1]:26380" in settings.describe()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REDIS_SENTINELS": "s:26379"}, "REDIS_SENTINEL_MASTER='': expected the master's name"),
        ({"REDIS_SENTINEL_MASTER": "mymaster"}, "REDIS_SENTINELS='': expected the Sentinels"),
        (
            {
                "REDIS_SENTINELS": "s:26379",
                "REDIS_SENTINEL_MASTER": "m",
                "REDIS_URL": "unix:///run/redis.sock",
            },
            "REDIS_URL='unix:///run/redis.sock': expected redis:// or rediss://",
        ),
    ],
)
def test_contradictory_sentinel_settings_are_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    [reported] = caught.value.problems
    assert reported.startswith(problem)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"REDIS_SENTINELS": "s:26379", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_CLUSTER='yes': expected no REDIS_SENTINELS",
        ),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL='unix:///run/redis.sock': expected"),
        (
            {"REDIS_URL": "redis://node:7000/2"},
            "REDIS_URL='redis://node:7000/2': expected database 0",
        ),
    ],
)
def test_contradictory_cluster_settings_are_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_CLUSTER": "yes", **env})
    [reported] = caught.value.problems
    assert reported.startswith(problem)


@pytest.mark.parametrize("url", ["redis://node:7000", "redis://node:7000/0", "rediss://n:7000/"])
def test_a_cluster_is_named_by_any_node_with_database_0(url: str) -> None:
    settings = Settings.from_env({"REDIS_CLUSTER": "yes", "REDIS_URL": url})
    assert settings.redis_cluster and "REDIS_CLUSTER=yes" in settings.describe()


def test_a_password_comes_from_its_file_without_the_final_newline(tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    settings = Settings.from_env({"PROXY_PASSWORD_FILE": str(secret)})
    assert settings.proxy_password == "s3cret"
    assert "s3cret" not in settings.describe()
    assert "PROXY_PASSWORD=***" in settings.describe()


@pytest.mark.parametrize(
    ("content", "environ", "problem"),
    [
        ("pw-in-file", {"PROXY_PASSWORD": "pw-in-env"}, "expected one or the other, not both"),
        ("", {}, "expected a file holding the password"),
        ("pw in file", {}, "expected a file holding the password"),
    ],
)
def test_password_problems_never_show_the_password(tmp_path, content, environ, problem) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"PROXY_PASSWORD_FILE": str(secret), **environ})
    assert problem in str(raised.value)
    assert "pw-in" not in str(raised.value) and "pw in" not in str(raised.value)


def test_a_bad_password_is_reported_masked() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"PROXY_PASSWORD": "has space"})
    assert "PROXY_PASSWORD='***': expected 1..1024 visible ASCII" in str(raised.value)
    assert "has space" not in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "protected"),
    [
        ({}, False),  # loopback
        ({"PROXY_HOST": "0.0.0.0"}, True),
        ({"PROXY_HOST": "::"}, True),
        ({"PROXY_HOST": "proxy.example"}, True),  # a name may resolve anywhere
        ({"PROXY_HOST": "localhost"}, False),
        ({"PROXY_HOST": "127.0.0.2"}, False),
        ({"PROXY_HOST": "0.0.0.0", "PROTECTED_MODE": "no"}, False),
        ({"PROXY_HOST": "0.0.0.0", "PROXY_PASSWORD": "s3cret"}, False),
    ],
)
def test_protected_mode_is_in_force_beyond_loopback_without_a_password(environ, protected) -> None:
    assert Settings.from_env(environ).protected is protected


def test_tls_files_load_and_mistakes_are_named(tmp_path) -> None:
    certs = make_certificates(tmp_path)
    cert, key, ca = str(certs.server.cert), str(certs.server.key), str(certs.ca)
    settings = Settings.from_env({"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key, "TLS_CA_FILE": ca})
    context = settings.tls_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    problems = {
        "expected both (TLS on) or neither": {"TLS_CERT_FILE": cert},
        "expected TLS_CERT_FILE and TLS_KEY_FILE with it": {"TLS_CA_FILE": ca},
        "could not be loaded": {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": ca},
        "TLS_KEY_FILE='/nowhere': expected a readable PEM": {"TLS_KEY_FILE": "/nowhere"},
    }
    for problem, environ in problems.items():
        with pytest.raises(ConfigError, match=re.escape(problem)):
            Settings.from_env(environ)


@pytest.mark.parametrize(
    ("text", "patterns"),
    [("*", ("*",)), ("user:*, session:?", ("user:*", "session:?")), (" a ,, b ", ("a", "b"))],
)
def test_key_patterns_are_a_comma_separated_list(text, patterns) -> None:
    assert Settings.from_env({"KEY_PATTERNS": text}).key_patterns == patterns


def test_no_key_patterns_at_all_is_refused() -> None:
    with pytest.raises(ConfigError, match="KEY_PATTERNS"):
        Settings.from_env({"KEY_PATTERNS": " , "})


@pytest.mark.parametrize(
    ("environ", "open_to_all"),
    [
        ({"PROXY_HOST": "0.0.0.0", "PROTECTED_MODE": "no"}, True),
        ({"PROXY_HOST": "0.0.0.0"}, False),  # protected mode refuses the others
        ({"PROXY_HOST": "0.0.0.0", "PROTECTED_MODE": "no", "PROXY_PASSWORD": "pw"}, False),
        ({"PROTECTED_MODE": "no"}, False),  # loopback
    ],
)
def test_a_proxy_open_to_all_is_recognised_for_the_start_up_warning(environ, open_to_all) -> None:
    assert Settings.from_env(environ).open_to_all is open_to_all
