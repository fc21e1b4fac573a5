"""CACHE_INVALIDATION=tracking on a Redis Cluster (REDIS_CLUSTER=yes): a link per primary.

Tracking state lives on each node, so each primary gets its own invalidation link
(proxy/invalidation.py: `CLIENT TRACKING on REDIRECT <itself> BCAST`). A link hears every
write to the slots its primary serves, whichever connection made it, so the read connections
track nothing and need no redirect.

The cache is fresh only while every primary's link is up. A link down suspends the whole
cache, as the one link of a single server does (what it holds stops being fresh, nothing is
stored), and it stores again once every primary has its link. The cache does not record which
node a key came from, so one primary's lapse costs every entry, not only that primary's:
coarser than needed, never stale.

A thread asks the cluster for its primaries every CHECK_SECONDS (CLUSTER SLOTS). A slot that
moves between primaries needs nothing: BCAST has no per-key state, so the new owner's link
hears the writes made there from then on. A new primary (a replica promoted, a node added)
gets a link, and the cache is suspended until that link is up; a primary that is gone loses
its link.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from proxy.cache import ReadThroughCache
from proxy.invalidation import Invalidator, TrackedBackend

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5
Node = tuple[str, int]


class Topology(TrackedBackend, Protocol):
    """What the links need of the backend: the primaries, and connections to each."""

    def primaries(self) -> frozenset[Node] | None: ...


class Gate:
    """The cache as several links see it: suspended while any of them is down."""

    def __init__(self, cache: ReadThroughCache) -> None:
        self.cache = cache
        self._down: set[Node] = set()
        self._gone: set[Node] = set()  # primaries no longer named: their links are ignored
        self._lock = threading.Lock()  # one link's resume() must see every other's suspend()

    def share(self, node: Node) -> Share:
        """The view of the cache `node`'s new link acts on."""
        with self._lock:
            self._gone.discard(node)
        return Share(self, node)

    def down(self, node: Node) -> None:
        with self._lock:
            if node not in self._gone:
                self._down.add(node)
                self.cache.suspend()

    def up(self, node: Node) -> None:
        with self._lock:
            self._down.discard(node)
            if not self._down and node not in self._gone:
                self.cache.resume()

    def forget(self, node: Node) -> None:
        """`node` serves no slot any more: its link no longer holds the cache back, even if
        its thread, slow to stop, reports a loss after this."""
        with self._lock:
            self._gone.add(node)
            self._down.discard(node)
            if not self._down:
                self.cache.resume()


class Share:
    """One primary's link's view of the cache (invalidation.Coherent)."""

    def __init__(self, gate: Gate, node: Node) -> None:
        self._gate = gate
        self._node = node

    def suspend(self) -> None:
        self._gate.down(self._node)

    def resume(self) -> None:
        self._gate.up(self._node)

    def invalidate(self, keys: list[bytes]) -> None:
        self._gate.cache.invalidate(keys)

    def invalidate_all(self) -> None:
        self._gate.cache.invalidate_all()  # FLUSHALL on one node: only its keys, but simpler


class ClusterTracking:
    """A link per primary of the cluster, following its topology."""

    def __init__(self, cache: ReadThroughCache, backend: Topology) -> None:
        self.backend = backend
        self._gate = Gate(cache)
        self._links: dict[Node, Invalidator] = {}
        self._retired_drops = 0  # links lost by primaries that are gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-watch", daemon=True)
        cache.suspend()  # nothing is cached until every primary's link is up

    @property
    def connected(self) -> bool:
        """Every primary known has its link up."""
        links = list(self._links.values())
        return bool(links) and all(link.connected for link in links)

    @property
    def drops(self) -> int:
        """Links lost since start, over every primary."""
        return self._retired_drops + sum(link.drops for link in list(self._links.values()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.backend.timeout + CHECK_SECONDS * 4)
        for link in list(self._links.values()):
            link.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.follow()
            self._stop.wait(CHECK_SECONDS)

    def follow(self) -> None:
        """Give each primary the cluster names a link, and take it from each one it no
        longer names (no answer changes nothing)."""
        primaries = self.backend.primaries()
        if primaries is None or primaries == set(self._links):
            return
        for node in sorted(primaries - set(self._links)):  # held back before anything goes
            log.info("primary %s:%d: opening its invalidation link", *node)
            link = self._links[node] = Invalidator(self._gate.share(node), self.backend, node)
            link.start()
        for node in sorted(set(self._links) - primaries):
            log.info("primary %s:%d is gone: closing its invalidation link", *node)
            link = self._links.pop(node)
            link.stop()
            self._retired_drops += link.drops
            self._gate.forget(node)
