"""Settings: environment (over `.env`) -> one frozen, validated object."""

from __future__ import annotations

import math
import os
import re
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DOTENV_PATH = Path(".env")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ACCESS_LOGS = ("hashed", "raw", "off")  # how access lines show keys: a hash, as sent, or no lines


# Descriptors the worker holds whatever the load: listeners, pollers and their wake-up pipes,
# log files, the interpreter's own, and one kept in reserve to refuse a client when out of them.
RESERVED_DESCRIPTORS = 64


class ConfigError(Exception):
    """One or more settings are invalid; `problems` names each variable, value and expectation."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _seconds_or_zero(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(text)
        return text.lower()

    return parse


def _host(text: str) -> str:
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise ValueError(text)
    return text


def _redis_url(text: str) -> str:
    parts = urlsplit(text)
    _ = parts.port  # raises ValueError on a port that is not a number in range
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return text
    if parts.scheme == "unix" and parts.path:
        return text
    raise ValueError(text)


def _sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port[,host:port...]` (IPv6 hosts bracketed); empty: no Sentinel."""
    found = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        host, _, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        number = int(port)
        if not host or not 1 <= number <= 65535:
            raise ValueError(text)
        found.append((_host(host), number))
    return tuple(found)


def _name(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError(text)
    return text


@dataclass(frozen=True)
class _Var:
    env: str
    default: str
    expected: str
    parse: Callable[[str], Any]
    secret: bool = False  # shown (in errors and the start-up line) through redact_url


def _choice(env: str, default: str, choices: tuple[str, ...]) -> _Var:
    return _Var(env, default, "one of " + ", ".join(choices), _one_of(choices))


# One row per setting: the table is the interface (README "Configuration" repeats it).
_VARS: dict[str, _Var] = {
    "redis_url": _Var(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "a URL like redis://[user:password@]host:port/db (or rediss://, unix://)",
        _redis_url,
        secret=True,
    ),
    "redis_sentinels": _Var(
        "REDIS_SENTINELS", "", "host:port[,host:port...] of Redis Sentinels, or empty", _sentinels
    ),
    "redis_sentinel_master": _Var(
        "REDIS_SENTINEL_MASTER", "", "the master's name as the Sentinels know it", _name
    ),
    "proxy_host": _Var("PROXY_HOST", "127.0.0.1", "a host name or IP address", _host),
    "proxy_port": _Var("PROXY_PORT", "8080", "an integer 1..65535", _int_between(1, 65535)),
    "cache_ttl": _Var("CACHE_TTL", "60", "a number of seconds > 0", _seconds),
    "cache_maxsize": _Var(
        "CACHE_MAXSIZE", "10000", "an integer 1..100000000", _int_between(1, 100_000_000)
    ),
    "cache_negative_ttl": _Var(
        "CACHE_NEGATIVE_TTL", "0", "a number of seconds >= 0 (0: off)", _seconds_or_zero
    ),
    "cache_stale_if_error": _Var(
        "CACHE_STALE_IF_ERROR", "0", "a number of seconds >= 0 (0: off)", _seconds_or_zero
    ),
    "cache_maxbytes": _Var(
        "CACHE_MAXBYTES", "268435456", "a number of bytes 1..2**50", _int_between(1, 2**50)
    ),
    "cache_max_item_bytes": _Var(
        "CACHE_MAX_ITEM_BYTES", "1048576", "a number of bytes 1..2**50", _int_between(1, 2**50)
    ),
    "max_parallel": _Var("MAX_PARALLEL", "4", "an integer 1..1024", _int_between(1, 1024)),
    "max_connections": _Var(
        "MAX_CONNECTIONS", "100", "an integer 1..100000", _int_between(1, 100_000)
    ),
    "redis_timeout": _Var("REDIS_TIMEOUT", "1.0", "a number of seconds > 0", _seconds),
    "resp_port": _Var(
        "RESP_PORT", "6380", "an integer 0..65535 (0 disables RESP)", _int_between(0, 65535)
    ),
    "keepalive_timeout": _Var(
        "KEEPALIVE_TIMEOUT", "5", "a whole number of seconds 1..3600", _int_between(1, 3600)
    ),
    "resp_idle_timeout": _Var(
        "RESP_IDLE_TIMEOUT",
        "300",
        "a whole number of seconds 0..86400 (0: never)",
        _int_between(0, 86400),
    ),
    "log_level": _choice("LOG_LEVEL", "info", LOG_LEVELS),
    "access_log": _choice("ACCESS_LOG", "hashed", ACCESS_LOGS),
    "cache_invalidation": _choice("CACHE_INVALIDATION", "none", ("none", "tracking")),
    "graceful_timeout": _Var(
        "GRACEFUL_TIMEOUT", "10", "a whole number of seconds 1..3600", _int_between(1, 3600)
    ),
}


@dataclass(frozen=True)
class Settings:
    """Every knob of one proxy instance, validated; see the README's configuration table."""

    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from `environ`, reporting every bad value at once."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in fields(cls):
            var = _VARS[field.name]
            raw = environ.get(var.env, var.default).strip()
            try:
                values[field.name] = var.parse(raw)
            except ValueError:
                shown = redact_url(raw) if var.secret else raw
                problems.append(f"{var.env}={shown!r}: expected {var.expected}")
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
        shown["redis_sentinels"] = ",".join(host_port(*s) for s in self.redis_sentinels)
        return " ".join(f"{_VARS[name].env}={value}" for name, value in shown.items())

    @property
    def descriptors_needed(self) -> int:
        """The most descriptors the worker can hold: on each front end MAX_CONNECTIONS clients
        and as many closing ones lingering; a Redis connection per thread of each front end;
        RESERVED_DESCRIPTORS."""
        return 4 * self.max_connections + 2 * self.max_parallel + RESERVED_DESCRIPTORS

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


# A URL's password, in the userinfo (`//user:secret@`) or the query (`?password=secret`), as
# redis-py reads both; matched as text so that a URL too broken to parse is redacted too.
URL_PASSWORDS = (
    (re.compile(r"(//[^/?#@]*?:)[^/?#]*@"), r"\1***@"),
    (re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE), r"\1***"),
)


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 literal bracketed (as Gunicorn's `bind` and Redis write it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    for pattern, replacement in URL_PASSWORDS:
        url = pattern.sub(replacement, url)
    return url


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse `KEY=VALUE` lines; comments, blank lines, `export` and quotes are allowed."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        return {}
    pairs: dict[str, str] = {}
    for line in lines:
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        pairs[key.strip()] = value
    return pairs
