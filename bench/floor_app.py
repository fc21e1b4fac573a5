"""The HTTP floor: a minimal Flask app answering every /get/<key> with a constant 100 bytes.

`make bench` runs it under exactly the proxy's Gunicorn settings (bench/floor.conf.py), so the
difference between the two is what the proxy itself costs.
"""

from flask import Flask, Response

VALUE = b"v" * 100
app = Flask(__name__)


@app.get("/get/<path:key>")
def get(key: str) -> Response:
    return Response(VALUE, mimetype="application/octet-stream")
