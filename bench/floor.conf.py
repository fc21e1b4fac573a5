"""Gunicorn settings for the floor app: gunicorn.conf.py's own, with only the app swapped.

The worker keeps the proxy's client handling (LoopWorker) without the proxy's service,
which ProxyWorker would build and serve in place of the floor app.
"""

import runpy

globals().update(runpy.run_path("gunicorn.conf.py"))
wsgi_app = "bench.floor_app:app"
worker_class = "proxy.http.loop.LoopWorker"
