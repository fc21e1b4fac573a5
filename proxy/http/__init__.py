"""The HTTP front end: the Flask app factory, key decoding, the hit path and accounting."""

from proxy.http.app import create_app

__all__ = ["create_app"]
