"""MasterWatch: following the Sentinels' answer, with a fake backend."""

from __future__ import annotations

from proxy.failover import MasterWatch


class FakeBackend:
    """Answers where the master is from a list, and counts dropped pools."""

    def __init__(self, *answers: tuple[str, int] | None) -> None:
        self.answers = list(answers)
        self.drops = 0

    def master(self) -> tuple[str, int] | None:
        return self.answers.pop(0)

    def drop_connections(self) -> None:
        self.drops += 1


def test_the_first_answer_is_recorded_and_a_move_is_followed() -> None:
    backend = FakeBackend(("a", 1), ("a", 1), ("b", 2), ("b", 2))
    told: list[str] = []
    watch = MasterWatch(backend, [lambda: told.append("moved")])
    for _ in range(4):
        watch.check()
    assert (backend.drops, told, watch.moves) == (1, ["moved"], 1)


def test_no_answer_from_the_sentinels_changes_nothing() -> None:
    backend = FakeBackend(("a", 1), None, ("a", 1))
    watch = MasterWatch(backend, [])
    for _ in range(3):
        watch.check()
    assert (backend.drops, watch.moves) == (0, 0)
