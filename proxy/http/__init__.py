"""The HTTP front end: the Flask app factory, the loop's hit answers, and what they share."""

from proxy.http.app import create_app
from proxy.http.onloop import LoopHits

__all__ = ["LoopHits", "create_app"]
