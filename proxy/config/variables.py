"""The settings table: each environment variable, its default, what it expects, how it is
parsed and how it is shown. The README's configuration table repeats it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.config.values import (
    host_name,
    int_between,
    key_patterns,
    no_spaces,
    one_of,
    password,
    readable_file,
    redact_url,
    redis_url,
    seconds,
    seconds_or_zero,
    sentinels,
    yes_no,
)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ACCESS_LOGS = ("hashed", "raw", "off")  # how access lines show keys: a hash, as sent, or no lines
RULE = "1..1024 visible ASCII characters, no spaces"  # what a password may be


@dataclass(frozen=True)
class Var:
    env: str
    default: str
    expected: str
    parse: Callable[[str], Any]
    # How a value is shown in errors and the start-up line: secrets never in clear.
    shown: Callable[[str], str] = str


def choice(env: str, default: str, choices: tuple[str, ...]) -> Var:
    return Var(env, default, "one of " + ", ".join(choices), one_of(choices))


def masked(text: str) -> str:
    return "***" if text else ""


# One row per setting: the table is the interface (README "Configuration" repeats it).
VARIABLES: dict[str, Var] = {
    "redis_url": Var(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "a URL like redis://[user:password@]host:port/db (or rediss://, unix://)",
        redis_url,
        redact_url,
    ),
    "redis_sentinels": Var(
        "REDIS_SENTINELS", "", "host:port[,host:port...] of Redis Sentinels, or empty", sentinels
    ),
    "redis_sentinel_master": Var(
        "REDIS_SENTINEL_MASTER", "", "the master's name as the Sentinels know it", no_spaces
    ),
    "redis_cluster": Var(
        "REDIS_CLUSTER", "no", "yes or no (yes: REDIS_URL names a Redis Cluster node)", yes_no
    ),
    "proxy_host": Var("PROXY_HOST", "127.0.0.1", "a host name or IP address", host_name),
    "proxy_port": Var("PROXY_PORT", "8080", "an integer 1..65535", int_between(1, 65535)),
    "cache_ttl": Var("CACHE_TTL", "60", "a number of seconds > 0", seconds),
    "cache_maxsize": Var(
        "CACHE_MAXSIZE", "10000", "an integer 1..100000000", int_between(1, 100_000_000)
    ),
    "cache_negative_ttl": Var(
        "CACHE_NEGATIVE_TTL", "0", "a number of seconds >= 0 (0: off)", seconds_or_zero
    ),
    "cache_stale_if_error": Var(
        "CACHE_STALE_IF_ERROR", "0", "a number of seconds >= 0 (0: off)", seconds_or_zero
    ),
    "cache_maxbytes": Var(
        "CACHE_MAXBYTES", "268435456", "a number of bytes 1..2**50", int_between(1, 2**50)
    ),
    "cache_max_item_bytes": Var(
        "CACHE_MAX_ITEM_BYTES", "1048576", "a number of bytes 1..2**50", int_between(1, 2**50)
    ),
    "max_parallel": Var("MAX_PARALLEL", "4", "an integer 1..1024", int_between(1, 1024)),
    "max_connections": Var(
        "MAX_CONNECTIONS", "100", "an integer 1..100000", int_between(1, 100_000)
    ),
    "redis_timeout": Var("REDIS_TIMEOUT", "1.0", "a number of seconds > 0", seconds),
    "resp_port": Var(
        "RESP_PORT", "6380", "an integer 0..65535 (0 disables RESP)", int_between(0, 65535)
    ),
    "keepalive_timeout": Var(
        "KEEPALIVE_TIMEOUT", "5", "a whole number of seconds 1..3600", int_between(1, 3600)
    ),
    "resp_idle_timeout": Var(
        "RESP_IDLE_TIMEOUT",
        "300",
        "a whole number of seconds 0..86400 (0: never)",
        int_between(0, 86400),
    ),
    "log_level": choice("LOG_LEVEL", "info", LOG_LEVELS),
    "access_log": choice("ACCESS_LOG", "hashed", ACCESS_LOGS),
    "cache_invalidation": choice("CACHE_INVALIDATION", "none", ("none", "tracking")),
    "graceful_timeout": Var(
        "GRACEFUL_TIMEOUT", "10", "a whole number of seconds 1..3600", int_between(1, 3600)
    ),
    "proxy_password": Var(
        "PROXY_PASSWORD", "", RULE + " (or empty: no password)", password, masked
    ),
    "proxy_password_file": Var(
        "PROXY_PASSWORD_FILE", "", "a readable file holding the password, or empty", readable_file
    ),
    "protected_mode": Var("PROTECTED_MODE", "yes", "yes or no", yes_no),
    "tls_cert_file": Var(
        "TLS_CERT_FILE", "", "a readable PEM certificate (chain) file, or empty", readable_file
    ),
    "tls_key_file": Var(
        "TLS_KEY_FILE", "", "a readable PEM private key file, or empty", readable_file
    ),
    "tls_ca_file": Var(
        "TLS_CA_FILE", "", "a readable PEM file of CA certificates, or empty", readable_file
    ),
    "key_patterns": Var(
        "KEY_PATTERNS",
        "*",
        "comma-separated glob patterns (Redis ACL syntax; * for every key)",
        key_patterns,
    ),
}
