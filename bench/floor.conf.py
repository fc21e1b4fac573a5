"""Gunicorn settings for the floor app: gunicorn.conf.py's own, with only the app swapped."""

import runpy

_production = runpy.run_path("gunicorn.conf.py")
globals().update({name: value for name, value in _production.items() if name != "post_worker_init"})
wsgi_app = "bench.floor_app:app"
