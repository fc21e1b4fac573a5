"""The TLS context both front ends serve with (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE).

One function, so that HTTP (through Gunicorn's `ssl_context` hook) and RESP (asyncio's
server) hold the same policy, and the start-up check loads exactly what they will.
"""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str, ca_file: str = "") -> ssl.SSLContext:
    """TLS 1.2 or later with the certificate chain and key; with `ca_file`, clients must show
    a certificate signed by one of its CAs (mutual TLS). Raises OSError or ssl.SSLError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    context.verify_mode = ssl.CERT_REQUIRED if ca_file else ssl.CERT_NONE
    return context
