"""HTTP cache hits answered on the worker's event loop, byte for byte as the Flask path would.

Why a second way to answer a hit: through a pool thread, a hit crosses from the loop to the
thread and back and runs through Gunicorn's Python parser and the WSGI stack, all for a map
lookup of microseconds; that round trip, not the lookup, bounds the hit rate. So the loop
answers canonical `GET`/`HEAD /get/<key>` requests (framing.py says which are canonical) whose
key is cached, and nothing else. Its bytes are what Gunicorn writes for the Flask path's answer
(status line, `Server`, `Date`, `Connection`, then the view's headers and body; the tests
compare them), and every hit gets its metrics and access-log line as on the Flask path. A miss,
a bad key and every other request go on to a pool thread and Flask.
"""

from __future__ import annotations

import time

from gunicorn import SERVER
from gunicorn.util import http_date

from proxy.access import Access
from proxy.cache import ReadThroughCache
from proxy.errors import ProxyError
from proxy.http.accounting import Finish, access_line, logs_access
from proxy.http.framing import Canonical
from proxy.http.hits import CACHE_STATUS, HIT_STATUS, VALUE_TYPE
from proxy.http.keys import key_from_uri
from proxy.metrics import Recorder

HEAD_TEMPLATE = (
    b"HTTP/%s 200 OK\r\nServer: "
    + SERVER.encode()
    + b"\r\nDate: %s\r\nConnection: %s\r\nContent-Type: "
    + VALUE_TYPE.encode()
    + b"\r\nContent-Length: %d\r\n"
    + f"{CACHE_STATUS}: {HIT_STATUS}\r\n\r\n".encode()
)


class LoopHits:
    """Answers canonical `/get/` requests for cached keys; None means "not here"."""

    def __init__(
        self, cache: ReadThroughCache, stats: Recorder, access_log: str, access: Access
    ) -> None:
        self.cache = cache
        self.access = access
        self.stats = stats
        self.access_log = access_log
        self._second = 0
        self._date = b""

    def answer(
        self, request: Canonical, closing: bool
    ) -> tuple[list[bytes], bool, Finish | None] | None:
        """If the key is cached: the answer's buffers, whether the connection stays open, and
        what writes its access line once the answer is sent (None if there is none to write).

        `closing`: the worker is stopping, so the answer says `Connection: close` (as
        Gunicorn's does then)."""
        started = time.perf_counter()
        access = self.access
        if access.required and not access.authorizes(request.authorization):
            return None  # Flask answers 401
        try:
            key = key_from_uri(request.target)
        except ProxyError:
            return None  # the view raises it again, and the error map answers
        if access.key_allowed is not None and not access.key_allowed(key):
            return None  # Flask answers 403
        value = self.cache.peek(key)
        if value is None:
            return None
        keep_alive = request.keep_alive and not closing
        connection = b"keep-alive" if keep_alive else b"close"
        head = HEAD_TEMPLATE % (request.version, self._http_date(), connection, len(value))
        answer = [head, value] if request.method == "GET" and value else [head]
        self.stats.record("hit", time.perf_counter() - started)
        if not logs_access(self.access_log):
            return answer, keep_alive, None
        finish = access_line(
            self.access_log,
            started,
            method=request.method,
            target=request.target,
            key=key,
            status="200",
            size=str(len(value)),
            outcome="hit",
        )
        return answer, keep_alive, finish

    def _http_date(self) -> bytes:
        """Gunicorn's Date value, formatted once a second."""
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._date = http_date(now).encode("latin-1")
        return self._date
