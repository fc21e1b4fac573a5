"""Gunicorn settings, derived from the proxy's own Settings (environment over `.env`).

Start from the project root: `gunicorn -c gunicorn.conf.py`.
"""

import ssl
import sys

from proxy.config import ConfigError, Settings, ensure_descriptors

try:
    settings = Settings.load()
    ensure_descriptors(settings.descriptors_needed)
except ConfigError as exc:
    # Exit before the arbiter starts any worker, naming every bad variable at once.
    print(f"redis-cache-proxy: {exc}", file=sys.stderr)
    sys.exit(2)

# Gunicorn insists on an application name. The worker does not import it: ProxyWorker builds
# the whole service (proxy/service.py) and serves the app this factory makes there.
wsgi_app = "proxy.http:create_app"
bind = [settings.bind]
# One worker process, so every request shares one cache; its threads are the parallelism.
workers = 1
# gthread, but refusing clients past MAX_CONNECTIONS with a 503, and owning the service's
# lifecycle (see proxy/worker.py).
worker_class = "proxy.worker.ProxyWorker"
threads = settings.max_parallel
worker_connections = settings.max_connections
keepalive = settings.keepalive_timeout
graceful_timeout = settings.graceful_timeout
loglevel = settings.log_level
# The longest request line Gunicorn allows: room for a fully %-encoded MAX_KEY_BYTES key.
limit_request_line = 8190
# One proxy needs no gunicornc control socket, and several started from one directory
# (tests, side-by-side benchmarks) would fight over its path.
control_socket_disable = True

# TLS on HTTP (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE) through Gunicorn's own settings; its
# ssl_context hook hands Gunicorn the context the RESP front end serves with too.
if settings.tls:
    certfile, keyfile = settings.tls_cert_file, settings.tls_key_file
    if settings.tls_ca_file:
        ca_certs, cert_reqs = settings.tls_ca_file, ssl.CERT_REQUIRED

    def ssl_context(config: object, default_ssl_context_factory: object) -> ssl.SSLContext | None:
        return settings.tls_context()
