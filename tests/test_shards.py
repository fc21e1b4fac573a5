"""The gate that holds the cache suspended while any cluster primary's link is down."""

from __future__ import annotations

from proxy.shards import Gate, Share

A, B = ("10.0.0.1", 7000), ("10.0.0.2", 7000)


class FakeCache:
    """Records what the links did to it."""

    def __init__(self) -> None:
        self.storing = True
        self.invalidated: list[bytes] = []
        self.flushed = 0

    def suspend(self) -> None:
        self.storing = False

    def resume(self) -> None:
        self.storing = True

    def invalidate(self, keys: list[bytes]) -> None:
        self.invalidated += keys

    def invalidate_all(self) -> None:
        self.flushed += 1


def gate_of_two() -> tuple[FakeCache, Share, Share]:
    cache = FakeCache()
    gate = Gate(cache)  # type: ignore[arg-type]
    first, second = gate.share(A), gate.share(B)
    first.suspend()  # as each Invalidator does before its link first connects
    second.suspend()
    return cache, first, second


def test_the_cache_stores_only_once_every_link_is_up() -> None:
    cache, first, second = gate_of_two()
    first.resume()
    assert not cache.storing
    second.resume()
    assert cache.storing


def test_one_link_lost_suspends_the_cache_until_it_is_back() -> None:
    cache, first, second = gate_of_two()
    first.resume()
    second.resume()
    second.suspend()
    assert not cache.storing
    first.resume()  # another link reconnecting does not make up for it
    assert not cache.storing
    second.resume()
    assert cache.storing


def test_a_primary_that_is_gone_no_longer_holds_the_cache_back() -> None:
    cache = FakeCache()
    gate = Gate(cache)  # type: ignore[arg-type]
    first, gone = gate.share(A), gate.share(B)
    first.suspend()
    gone.suspend()
    first.resume()
    gate.forget(B)
    assert cache.storing
    gone.suspend()  # its thread, slow to stop, reports a loss after it was forgotten
    assert cache.storing


def test_a_primary_named_again_holds_the_cache_back_again() -> None:
    cache = FakeCache()
    gate = Gate(cache)  # type: ignore[arg-type]
    gate.share(A).resume()
    gate.forget(A)
    gate.share(A).suspend()  # its new link, before it connects
    assert not cache.storing


def test_every_link_invalidates_the_one_cache() -> None:
    cache, first, second = gate_of_two()
    first.invalidate([b"a"])
    second.invalidate([b"b"])
    second.invalidate_all()
    assert (cache.invalidated, cache.flushed) == ([b"a", b"b"], 1)
