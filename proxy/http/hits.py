"""The HTTP hit path: `GET /get/<key>` cache hits answered in front of Flask.

A hit needs one locked map lookup; Flask would wrap it in a request context, a Request,
Werkzeug's routing and a Response, which cost far more than the lookup. So hits are answered
here, with the view's exact status, headers and body. Misses, absent keys, bad keys and every
other route and method go on to Flask, where the fetching view and the one error map are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from proxy.cache import ReadThroughCache
from proxy.errors import ProxyError
from proxy.http.accounting import KEY, OUTCOME
from proxy.http.keys import GET_PREFIX, key_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

VALUE_TYPE = "application/octet-stream"
HIT_METHODS = frozenset(("GET", "HEAD"))  # the methods the /get/ route answers


def value_headers(value: bytes) -> list[tuple[str, str]]:
    """The headers of a 200 answer carrying `value`."""
    return [("Content-Type", VALUE_TYPE), ("Content-Length", str(len(value)))]


class HitPath:
    """WSGI middleware: answers `/get/<key>` cache hits itself, and the rest through Flask.

    It decodes the key once and leaves it in the environ (KEY) for the view and the access
    log; a key that does not decode is left to the view, which raises the error again.
    """

    def __init__(self, flask_app: WSGIApplication, cache: ReadThroughCache) -> None:
        self.flask_app = flask_app
        self.cache = cache

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method in HIT_METHODS and environ.get("PATH_INFO", "").startswith(GET_PREFIX):
            value = self._peek(environ)
            if value is not None:
                environ[OUTCOME] = "hit"
                start_response("200 OK", value_headers(value))
                return (value,) if method == "GET" else ()
        return self.flask_app(environ, start_response)

    def _peek(self, environ: WSGIEnvironment) -> bytes | None:
        try:
            key = environ[KEY] = key_of(environ)
        except ProxyError:
            return None  # Flask's view raises it again, and the error map answers
        return self.cache.peek(key)
