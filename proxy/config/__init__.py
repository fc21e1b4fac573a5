"""Settings: environment (over `.env`) -> one frozen, validated object."""

from __future__ import annotations

import os
import resource
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.tls import server_context
from proxy.config.values import (
    host_port,
    is_loopback_host,
    password,
    read_dotenv,
    redact_url,
)
from proxy.config.variables import RULE, VARIABLES, masked

__all__ = [
    "RESERVED_DESCRIPTORS",
    "ConfigError",
    "Settings",
    "ensure_descriptors",
    "host_port",
    "read_dotenv",
    "redact_url",
]

DOTENV_PATH = Path(".env")


# Descriptors the worker holds whatever the load: listeners, pollers and their wake-up pipes,
# log files, the interpreter's own, and one kept in reserve to refuse a client when out of them.
RESERVED_DESCRIPTORS = 64


class ConfigError(Exception):
    """One or more settings are invalid; `problems` names each variable, value and expectation."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Settings:
    """Every knob of one proxy instance, validated; see the README's configuration table."""

    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str
    redis_cluster: bool
    proxy_host: str
    proxy_port: int
    cache_ttl: float
    cache_maxsize: int
    cache_negative_ttl: float
    cache_stale_if_error: float
    cache_maxbytes: int
    cache_max_item_bytes: int
    max_parallel: int
    max_connections: int
    redis_timeout: float
    resp_port: int
    keepalive_timeout: int
    resp_idle_timeout: int
    log_level: str
    access_log: str
    cache_invalidation: str
    graceful_timeout: int
    proxy_password: str
    proxy_password_file: str
    protected_mode: bool
    tls_cert_file: str
    tls_key_file: str
    tls_ca_file: str
    key_patterns: tuple[str, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from `environ`, reporting every bad value at once."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in fields(cls):
            var = VARIABLES[field.name]
            raw = environ.get(var.env, var.default).strip()
            try:
                values[field.name] = var.parse(raw)
            except ValueError:
                problems.append(f"{var.env}={var.shown(raw)!r}: expected {var.expected}")
        if values.get("resp_port") and values["resp_port"] == values.get("proxy_port"):
            port = values["resp_port"]
            problems.append(f"RESP_PORT='{port}': expected a port other than PROXY_PORT ({port})")
        negative, ttl = values.get("cache_negative_ttl"), values.get("cache_ttl")
        if negative is not None and ttl is not None and negative > ttl:
            problems.append(
                f"CACHE_NEGATIVE_TTL='{negative:g}': expected at most CACHE_TTL ({ttl:g})"
            )
        items, budget = values.get("cache_max_item_bytes"), values.get("cache_maxbytes")
        if items is not None and budget is not None and items > budget:
            problems.append(
                f"CACHE_MAX_ITEM_BYTES='{items}': expected at most CACHE_MAXBYTES ({budget})"
            )
        problems += _sentinel_problems(values)
        problems += _cluster_problems(values)
        problems += _password_problems(values)
        problems += _tls_problems(values)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    @property
    def sentinel(self) -> bool:
        """Is the master found through Sentinel (REDIS_SENTINELS)?"""
        return bool(self.redis_sentinels)

    @classmethod
    def load(cls) -> Settings:
        """Settings from the process environment, falling back to `.env` in the working dir."""
        return cls.from_env({**read_dotenv(DOTENV_PATH), **os.environ})

    def describe(self) -> str:
        """Every setting as VARIABLE=value, for the startup log line; the password masked."""
        shown = {**{f.name: getattr(self, f.name) for f in fields(self)}}
        shown["redis_url"] = redact_url(self.redis_url)
        shown["proxy_password"] = masked(self.proxy_password)
        shown["protected_mode"] = "yes" if self.protected_mode else "no"
        shown["redis_cluster"] = "yes" if self.redis_cluster else "no"
        shown["key_patterns"] = ",".join(self.key_patterns)
        shown["redis_sentinels"] = ",".join(host_port(*s) for s in self.redis_sentinels)
        return " ".join(f"{VARIABLES[name].env}={value}" for name, value in shown.items())

    @property
    def descriptors_needed(self) -> int:
        """The most descriptors the worker can hold: on each front end MAX_CONNECTIONS clients
        and as many closing ones lingering; a Redis connection per thread of each front end;
        RESERVED_DESCRIPTORS."""
        return 4 * self.max_connections + 2 * self.max_parallel + RESERVED_DESCRIPTORS

    @property
    def _reachable_without_credentials(self) -> bool:
        """Bound beyond loopback, with neither a password nor client certificates required."""
        credentials = self.proxy_password or self.tls_ca_file
        return not is_loopback_host(self.proxy_host) and not credentials

    @property
    def protected(self) -> bool:
        """Is protected mode in force: on, and the listeners reachable without credentials?"""
        return self.protected_mode and self._reachable_without_credentials

    @property
    def open_to_all(self) -> bool:
        """Reachable without credentials and protected mode off: anyone who reaches the
        listeners reads every key (allowed, but worth a warning)."""
        return not self.protected_mode and self._reachable_without_credentials

    @property
    def tls(self) -> bool:
        """Do both front ends speak TLS only (TLS_CERT_FILE and TLS_KEY_FILE)?"""
        return bool(self.tls_cert_file)

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context both front ends use, or None without TLS."""
        if not self.tls:
            return None
        return server_context(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @property
    def bind(self) -> str:
        """The listen address in Gunicorn's `bind` syntax."""
        return host_port(self.proxy_host, self.proxy_port)


def ensure_descriptors(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `needed` if it is lower (the worker inherits
    it); ConfigError, naming the numbers, if the hard limit does not allow it. Returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            [
                f"open files: the limit is {hard} (hard) but MAX_CONNECTIONS and MAX_PARALLEL "
                f"need {needed} (4 x MAX_CONNECTIONS + 2 x MAX_PARALLEL + "
                f"{RESERVED_DESCRIPTORS}): raise `ulimit -n` or lower MAX_CONNECTIONS"
            ]
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def _password_problems(values: dict[str, Any]) -> list[str]:
    """PROXY_PASSWORD and PROXY_PASSWORD_FILE are one setting: the file's content (without a
    final newline) becomes the password. Never shows the password."""
    path = values.get("proxy_password_file")
    if not path:
        return []
    if values.get("proxy_password"):
        return [
            "PROXY_PASSWORD and PROXY_PASSWORD_FILE: expected one or the other, not both "
            f"(PROXY_PASSWORD_FILE={path!r})"
        ]
    try:
        with open(path, encoding="latin-1") as secret:
            text = password(secret.read().removesuffix("\n").removesuffix("\r"))
    except (OSError, ValueError):
        text = ""
    if not text:
        return [f"PROXY_PASSWORD_FILE={path!r}: expected a file holding the password ({RULE})"]
    values["proxy_password"] = text
    return []


def _tls_problems(values: dict[str, Any]) -> list[str]:
    """A certificate needs its key and the other way round; a CA needs both; the three must
    load into a TLS context."""
    cert, key, ca = (values.get(name) for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"))
    if cert is None or key is None or ca is None:
        return []  # already reported
    if bool(cert) != bool(key):
        return ["TLS_CERT_FILE and TLS_KEY_FILE: expected both (TLS on) or neither (TLS off)"]
    if ca and not cert:
        return [f"TLS_CA_FILE={ca!r}: expected TLS_CERT_FILE and TLS_KEY_FILE with it"]
    if not cert:
        return []
    try:
        server_context(cert, key, ca)
    except (OSError, ssl.SSLError) as exc:
        return [f"TLS_CERT_FILE={cert!r}, TLS_KEY_FILE={key!r}: could not be loaded ({exc})"]
    return []


def _sentinel_problems(values: dict[str, Any]) -> list[str]:
    """Sentinel settings that contradict each other or REDIS_URL."""
    sentinels, master = values.get("redis_sentinels"), values.get("redis_sentinel_master")
    url = values.get("redis_url", "")
    if sentinels and not master:
        return ["REDIS_SENTINEL_MASTER='': expected the master's name with REDIS_SENTINELS"]
    if master and sentinels == ():
        return [f"REDIS_SENTINELS='': expected the Sentinels to ask for {master!r}"]
    if sentinels and url.startswith("unix:"):
        return [
            f"REDIS_URL='{redact_url(url)}': expected redis:// or rediss:// with REDIS_SENTINELS "
            "(Sentinel gives TCP addresses)"
        ]
    return []


def _cluster_problems(values: dict[str, Any]) -> list[str]:
    """REDIS_CLUSTER settings that contradict REDIS_URL or Sentinel."""
    if not values.get("redis_cluster"):
        return []
    url = values.get("redis_url", "")
    if values.get("redis_sentinels"):
        return ["REDIS_CLUSTER='yes': expected no REDIS_SENTINELS (a cluster fails over itself)"]
    if url.startswith("unix:"):
        return [
            f"REDIS_URL='{redact_url(url)}': expected redis:// or rediss:// with REDIS_CLUSTER "
            "(the cluster gives TCP addresses)"
        ]
    if url and urlsplit(url).path.strip("/") not in ("", "0"):
        return [f"REDIS_URL='{redact_url(url)}': expected database 0 (a cluster has no other)"]
    return []
