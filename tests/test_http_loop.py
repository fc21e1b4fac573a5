"""The HTTP loop's accept path when the process runs out of descriptors (no Gunicorn running)."""

from __future__ import annotations

import errno
import selectors
import socket

from proxy.http.loop import LoopWorker
from proxy.http.refusals import HTTP_REFUSAL, Lingerer, Spare
from tests.test_http_onloop import _worker_as_configured


class Exhausted(socket.socket):
    """A real listener whose next accept() fails as it does when descriptors run out."""

    failures = 1

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def loop_over(listener: socket.socket) -> LoopWorker:
    worker = _worker_as_configured(lambda environ, start: [])
    worker.sockets = [listener]
    worker.poller = selectors.DefaultSelector()
    worker.lingerer = Lingerer(worker.poller, 10)
    worker.spare = Spare()
    worker.set_accept_enabled(True)
    return worker


def test_out_of_descriptors_refuses_with_the_spare_and_pauses_accepting() -> None:
    with Exhausted(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        worker = loop_over(listener)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            worker.accept(listener)  # must not raise: the worker lives on
            assert client.recv(4096) == HTTP_REFUSAL
        assert worker.refused == 1
        assert worker.accept_again_at > 0
        assert listener not in [key.fileobj for key in worker.poller.get_map().values()]
