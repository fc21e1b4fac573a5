"""The Gunicorn worker gunicorn.conf.py names: the HTTP loop, and the service's lifecycle.

ProxyWorker is LoopWorker (proxy/http/loop.py: the poller owns every HTTP connection) with
the proxy's service (proxy/service.py) built, started and stopped around it, and hits answered
on its loop.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from proxy.config import Settings
from proxy.http.accounting import KeyHidingLog
from proxy.http.loop import LoopWorker
from proxy.service import Service


class ProxyWorker(LoopWorker):
    """The proxy's worker: owns the service (proxy/service.py) from build to stop."""

    hits_on_loop = True
    log: Any  # Gunicorn's logger; wrapped by KeyHidingLog once the settings are known

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service: Service | None = None  # built and started by load_wsgi()

    def load_wsgi(self) -> None:
        """Build the service and start it; Gunicorn serves its HTTP app.

        Started here, before Gunicorn counts the worker as booted, so a RESP port that cannot
        be bound stops Gunicorn with a boot error instead of respawning the worker forever.
        """
        settings = Settings.load()
        _send_logs_where_gunicorn_does(settings.log_level)
        self.log = KeyHidingLog(self.log, settings.access_log)
        self.service = Service.build(settings)
        self.service.start(http=self)
        self.wsgi = self.service.http_app
        self.access = self.service.access
        # A SCRIPT_NAME in the environment changes how Gunicorn routes every request.
        if not os.environ.get("SCRIPT_NAME"):
            self.hits = self.service.loop_hits

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.service is not None:
                self.service.stop(self._time_left())

    def _time_left(self) -> float:
        """What remains of the drain for RESP and the Redis connections to stop in."""
        if self.stop_by is None:  # the loop ended without SIGTERM (the arbiter went away)
            return float(self.cfg.graceful_timeout)
        return max(0.0, self.stop_by - time.monotonic())

    def handle_exit(self, sig: int, frame: object) -> None:
        """SIGTERM: stop accepting on both front ends; in-flight requests still finish."""
        super().handle_exit(sig, frame)
        if self.service is not None:
            self.service.stop_accepting()


def _send_logs_where_gunicorn_does(level: str) -> None:
    """The proxy's loggers use Gunicorn's handlers (format, stream) at LOG_LEVEL."""
    proxy_log = logging.getLogger("proxy")
    proxy_log.setLevel(level.upper())
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers and not proxy_log.handlers:
        for handler in gunicorn_log.handlers:
            proxy_log.addHandler(handler)
        proxy_log.propagate = False
