"""Per-request accounting on HTTP: latency and outcome into metrics, and the access log line."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from proxy.http.keys import GET_PREFIX
from proxy.logs import RateLimitedLog
from proxy.metrics import Recorder

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# WSGI environ slots the hit path and the view fill in for Accounting.
OUTCOME = "redis_cache_proxy.outcome"  # a read's outcome: metrics.OUTCOMES names them
KEY = "redis_cache_proxy.key"  # the decoded key
QUIET_PATHS = frozenset(("/livez", "/readyz", "/metrics"))  # probes: no access-log noise
access = logging.getLogger("proxy.access")
# Writes one access line, given when the answer's last byte was handed to the socket
# (time.perf_counter()); the worker's loop calls it once it has written that far.
Finish = Callable[[float], None]
# Set by the worker around a request it runs on a pool thread: access lines wait there for the
# loop to write the answer, instead of being written when the app returns.
PENDING_LINES: ContextVar[list[Finish] | None] = ContextVar("pending_access_lines", default=None)
# A key as it appears in any log text: whatever follows /get/ up to a space or a quote.
KEY_IN_TEXT = re.compile(r"/get/([^\s'\"]*)")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


class Accounting:
    """WSGI middleware: times each request, counts reads by outcome, writes the access line.

    Plain WSGI rather than Flask hooks: it sees the hits the hit path answers, which never
    reach Flask, and per request it costs a closure, not Flask's hook dispatch.
    """

    def __init__(self, wsgi_app: WSGIApplication, stats: Recorder, access_log: str) -> None:
        self.wsgi_app = wsgi_app
        self.stats = stats
        self.access_log = access_log

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        sent: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            sent.append((status, headers))
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, capture)
        seconds = time.perf_counter() - started
        outcome: str | None = environ.get(OUTCOME)
        if outcome is not None:
            self.stats.record(outcome, seconds)
        quiet = environ.get("PATH_INFO") in QUIET_PATHS or not logs_access(self.access_log)
        if sent and not quiet:
            status, headers = sent[-1]
            size = next((v for name, v in headers if name.lower() == "content-length"), "0")
            target = str(environ.get("RAW_URI") or environ.get("PATH_INFO", ""))
            method = str(environ.get("REQUEST_METHOD"))
            code = status.split(" ", 1)[0]
            finish = access_line(
                self.access_log,
                started,
                method=method,
                target=target,
                key=environ.get(KEY),
                status=code,
                size=size,
                outcome=outcome,
            )
            pending = PENDING_LINES.get()
            if pending is None:
                finish(started + seconds)
            else:
                pending.append(finish)
        return body


def logs_access(access_log: str) -> bool:
    """Are access lines written at all (ACCESS_LOG, and the access logger's level)?"""
    return access_log != "off" and access.isEnabledFor(logging.INFO)


def access_line(
    access_log: str,
    started: float,
    *,
    method: str,
    target: str,
    key: bytes | None,
    status: str,
    size: str,
    outcome: str | None,
) -> Finish:
    """What writes a request's access line once its answer is sent, the duration running from
    `started` (time.perf_counter()). `outcome` is a read's (None for any other request)."""
    line = partial(
        log_access,
        access_log,
        method=method,
        target=target,
        key=key,
        status=status,
        size=size,
        outcome=outcome or "-",
    )
    return lambda sent: line(seconds=sent - started)


def log_access(
    access_log: str,
    *,
    method: str,
    target: str,
    key: bytes | None,
    status: str,
    size: str,
    outcome: str,
    seconds: float,
) -> None:
    """The access-log line of one answered request (the caller checks logs_access())."""
    access.info(
        "%s %s status=%s outcome=%s bytes=%s duration_ms=%.2f",
        method,
        _logged_target(access_log, target, key),
        status,
        outcome,
        size,
        seconds * 1000,
    )


def _logged_target(access_log: str, target: str, key: bytes | None) -> str:
    """The request target as the access log shows it: keys hashed unless ACCESS_LOG=raw (the
    decoded key if the view decoded one, else whatever follows /get/, on any method or status)."""
    if access_log == "raw":
        return target
    if key is None:
        return hide_keys(target)
    return _hashed(key)


def hide_keys(text: str) -> str:
    """`text` with whatever follows each /get/ hashed, as the access log shows keys."""
    return KEY_IN_TEXT.sub(lambda found: _hashed(found[1].encode("latin-1", "replace")), text)


def _hashed(key: bytes) -> str:
    digest = hashlib.blake2b(key, digest_size=8).hexdigest()
    return f"{GET_PREFIX}<key blake2b:{digest} len={len(key)}>"


class KeyHidingLog:
    """Gunicorn's logger, as the worker hands it its own warnings: a malformed request's
    warning (which quotes the request line, key included) has keys hashed unless
    ACCESS_LOG=raw, and is written at most once per interval, as any client-caused line."""

    def __init__(self, gunicorn_log: Any, access_log: str) -> None:
        self._log = gunicorn_log
        self._raw = access_log == "raw"
        self._limited = RateLimitedLog(logging.getLogger("gunicorn.error"))

    def warning(self, message: str, *args: object) -> None:
        text = message % args if args else message
        if not self._raw:
            text = hide_keys(text)
        if text.startswith("Invalid request"):
            self._limited.warn("%s", text, kind="invalid request")
        else:
            self._log.warning("%s", text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)
