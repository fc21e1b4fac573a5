"""Keys on HTTP: taken from the raw request target, percent-decoded to bytes, size-checked.

Werkzeug has already decoded `%2F` and replaced invalid UTF-8 in PATH_INFO by the time Flask
routes a request, so the key comes from the raw URI Gunicorn keeps in the environ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

from proxy.errors import InvalidKey, KeyTooLong

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

MAX_KEY_BYTES = 2048  # fully percent-encoded it still fits Gunicorn's 8190-byte request line
GET_PREFIX = "/get/"


def key_from_uri(raw_uri: str) -> bytes:
    """The key bytes from a raw request target such as `/get/a%2Fb?x` (-> b"a/b")."""
    if not raw_uri.startswith("/"):  # absolute-form target: http://host/get/...
        raw_uri = urlsplit(raw_uri).path
    encoded = raw_uri.partition("?")[0][len(GET_PREFIX) :]
    if len(encoded) > 3 * MAX_KEY_BYTES:  # too long even if every byte were %XX
        raise KeyTooLong(f"the key is longer than {MAX_KEY_BYTES} bytes")
    # Most keys need no decoding; unquote_to_bytes would give the same bytes, more slowly.
    key = unquote_to_bytes(encoded) if "%" in encoded else encoded.encode()
    if not key:
        raise InvalidKey("the key is empty")
    if len(key) > MAX_KEY_BYTES:
        raise KeyTooLong(f"the key is longer than {MAX_KEY_BYTES} bytes")
    return key


def key_of(environ: WSGIEnvironment) -> bytes:
    """The key a `/get/` request names, from its raw request target (see key_from_uri)."""
    return key_from_uri(environ.get("RAW_URI") or environ.get("REQUEST_URI", ""))
