"""The loop's hit answers are byte for byte the Flask path's: proxy/http/onloop.py against
Gunicorn's parser and the Flask app, run as a pool thread runs them (LoopWorker._serve)."""

from __future__ import annotations

import logging
import os
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.access import Access
from proxy.cache import ReadThroughCache
from proxy.http import LoopHits, create_app
from proxy.http.framing import scan
from proxy.http.loop import LoopWorker
from proxy.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
STORE = {b"k": b"value", b"a/b": b"slash", b"empty": b"", b"\xff sp": b"\x00bin\r\n"}


class Paths:
    """The two ways a request can be answered, over one cache holding STORE."""

    def __init__(self, access: Access | None = None) -> None:
        access = access or Access.open()
        self.cache = ReadThroughCache(maxsize=100, ttl=600, load=lambda key: (STORE.get(key), None))
        for key in STORE:
            self.cache.lookup(key)
        metrics = Metrics(self.cache)
        self.stats = metrics.requests["http"]
        self.hits = LoopHits(self.cache, self.stats, "hashed", access)
        app = create_app(
            self.cache,
            requests=self.stats,
            check_ready=dict,
            exposition=metrics.exposition,
            access_log="hashed",
            access=access,
        )
        self.worker = _worker_as_configured(app)
        self.peer = SimpleNamespace(address=("127.0.0.1", 40000), server=("127.0.0.1", 8080))

    def on_loop(self, request: bytes) -> tuple[bytes, bool] | None:
        framed = scan(request)
        assert framed is not None
        if framed.canonical is None:
            return None
        answered = self.hits.answer(framed.canonical, closing=False)
        if answered is None:
            return None
        return b"".join(answered[0]), answered[1]

    def through_flask(self, request: bytes) -> tuple[bytes, bool]:
        written, keep_alive, _ = self.worker._serve(self.peer, request)  # type: ignore[arg-type]
        return b"".join(written), keep_alive


def _worker_as_configured(app) -> LoopWorker:
    """A worker with gunicorn.conf.py's settings, serving `app` (not started: _serve only)."""
    cfg = Config()
    for name, value in runpy.run_path(str(ROOT / "gunicorn.conf.py")).items():
        if name in cfg.settings and name not in ("bind", "wsgi_app"):
            cfg.set(name, value)
    worker = LoopWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    worker.wsgi = app
    return worker


def undated(answer: bytes) -> bytes:
    assert DATE.search(answer), answer
    return DATE.sub(b"\r\nDate: -\r\n", answer, count=1)


@pytest.fixture(scope="module")
def paths() -> Paths:
    logging.getLogger("proxy.access").setLevel(logging.WARNING)
    return Paths()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /get/k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl\r\nAccept: */*\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nHost: localhost\r\n\r\n",  # wrk's
        b"HEAD /get/a%2Fb HTTP/1.1\r\n\r\n",
        b"GET /get/empty HTTP/1.1\r\n\r\n",
        b"GET /get/%FF%20sp?x=1 HTTP/1.0\r\n\r\n",
        b"GET /get/k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /get/k HTTP/1.1\r\nConnection: close\r\n\r\n",
    ],
)
def test_common_hits_are_answered_on_the_loop_as_flask_would(paths, request_bytes) -> None:
    on_loop = paths.on_loop(request_bytes)
    assert on_loop is not None  # the loop answered it
    flask_answer, flask_keep_alive = paths.through_flask(request_bytes)
    assert undated(on_loop[0]) == undated(flask_answer)
    assert on_loop[1] == flask_keep_alive


def test_a_miss_a_bad_key_and_other_routes_are_not_answered_on_the_loop(paths) -> None:
    for request in (b"GET /get/absent", b"GET /get/", b"GET /livez", b"GET /get/" + b"x" * 7000):
        assert paths.on_loop(request + b" HTTP/1.1\r\n\r\n") is None


def test_a_stopping_worker_answers_connection_close(paths) -> None:
    framed = scan(b"GET /get/k HTTP/1.1\r\n\r\n")
    assert framed is not None and framed.canonical is not None
    answered = paths.hits.answer(framed.canonical, closing=True)
    assert answered is not None
    assert b"\r\nConnection: close\r\n" in answered[0][0]
    assert answered[1] is False


def test_a_loop_hit_is_counted_as_a_flask_hit_is(paths) -> None:
    before = paths.stats.snapshot()[0]["hit"]
    paths.on_loop(b"GET /get/k HTTP/1.1\r\n\r\n")
    paths.through_flask(b"GET /get/k HTTP/1.1\r\n\r\n")
    assert paths.stats.snapshot()[0]["hit"] == before + 2


CACHED = st.sampled_from(["k", "a%2Fb", "a/b", "empty", "%FF%20sp", "%ff+sp"])
KEYS = st.one_of(CACHED, st.sampled_from(["absent", "", "k%", "a%2fb%"]))
TARGETS = st.one_of(
    st.builds(lambda key, query: f"/get/{key}{query}", KEYS, st.sampled_from(["", "?", "?a=b"])),
    st.builds(lambda key: f"http://localhost/get/{key}", KEYS),
    st.sampled_from(["/get", "/livez", "/get/k#f", "//get/k"]),
)
PLAIN_NAMES = ["Host", "HOST", "host", "User-Agent", "Accept", "Connection", "connection", "X-Id"]
PLAIN_VALUES = ["localhost", " close", "keep-alive ", "Keep-Alive", "close, te", "", "\t x \t"]
NAMES = st.sampled_from(
    [*PLAIN_NAMES, "Content-Length", "Transfer-Encoding", "Expect", "X_Under", "Upgrade"]
)
VALUES = st.sampled_from([*PLAIN_VALUES, "0", "chunked", "100-continue", "h2c", "caf\xe9"])


def fields(names, values, folds) -> st.SearchStrategy[str]:
    field = st.tuples(names, st.sampled_from([": ", ":", ":  "]), values, st.sampled_from(folds))
    return st.lists(field, max_size=4).map(
        lambda drawn: "".join(f"{n}{sep}{v}{fold}\r\n" for n, sep, v, fold in drawn)
    )


def request(methods, targets, versions, head_fields) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda method, target, version, rest: f"{method} {target} {version}\r\n{rest}\r\n".encode(
            "latin-1"
        ),
        st.sampled_from(methods),
        targets,
        st.sampled_from(versions),
        head_fields,
    )


# Canonical reads of cached keys, as clients send them, and their near misses.
CANONICAL = request(
    ["GET", "HEAD"],
    st.builds(lambda key: f"/get/{key}", CACHED),
    ["HTTP/1.1", "HTTP/1.0"],
    fields(st.sampled_from(PLAIN_NAMES), st.sampled_from(PLAIN_VALUES), [""]),
)
NEARLY = request(
    ["GET", "HEAD", "POST", "get"],
    TARGETS,
    ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"],
    fields(NAMES, VALUES, ["", "", "\r\n x"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(CANONICAL, NEARLY), min_size=1, max_size=2))
def test_whatever_the_loop_answers_flask_answers_byte_for_byte(paths, pipelined) -> None:
    """Canonical and nearly canonical requests, alone or pipelined in pairs: every one the
    loop answers gets the very bytes (Date aside) and keep-alive decision of the Flask path."""
    for request in pipelined:
        on_loop = paths.on_loop(request)
        event("answered on the loop" if on_loop else "left to Gunicorn and Flask")
        if on_loop is None:
            continue
        flask_answer, flask_keep_alive = paths.through_flask(request)
        assert undated(on_loop[0]) == undated(flask_answer)
        assert on_loop[1] == flask_keep_alive


PASSWORD = "s3cret"
SECURED = Access(PASSWORD, ("k", "a*", "empty"), protected=False)
AUTHORIZATIONS = st.sampled_from(
    [
        "Bearer s3cret",
        "bearer s3cret",
        "Bearer  s3cret ",
        "Bearer wrong",
        "Bearer s3cret2",
        "Basic ZGVmYXVsdDpzM2NyZXQ=",  # default:s3cret
        "Basic OnMzY3JldA==",  # :s3cret
        "Basic Ym9iOnMzY3JldA==",  # bob:s3cret
        "Basic !!",
        "s3cret",
    ]
)
AUTHORIZED = request(
    ["GET", "HEAD"],
    st.builds(lambda key: f"/get/{key}", CACHED),
    ["HTTP/1.1", "HTTP/1.0"],
    st.builds(
        lambda auth, rest, twice: f"Authorization: {auth}\r\n" * (1 + twice) + rest,
        AUTHORIZATIONS,
        fields(st.sampled_from(PLAIN_NAMES), st.sampled_from(PLAIN_VALUES), [""]),
        st.booleans(),
    ),
)


@pytest.fixture(scope="module")
def secured() -> Paths:
    return Paths(SECURED)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(AUTHORIZED, CANONICAL))
def test_with_a_password_the_loop_answers_only_what_flask_would_serve(secured, request) -> None:
    """With PROXY_PASSWORD and KEY_PATTERNS, the loop answers a request only if Flask would
    serve it a value (the right password, an allowed key), and with the same bytes; every
    other one (a 401, a 403) is left to Flask."""
    on_loop = secured.on_loop(request)
    flask_answer, flask_keep_alive = secured.through_flask(request)
    event("answered on the loop" if on_loop else "left to Gunicorn and Flask")
    served = flask_answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    assert (on_loop is not None) == served, flask_answer
    if on_loop is None:
        return
    assert undated(on_loop[0]) == undated(flask_answer)
    assert on_loop[1] == flask_keep_alive
