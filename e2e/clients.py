"""A raw HTTP/1.1 client for tests that decide exactly when connections open and requests go."""

from __future__ import annotations

import socket


class HttpConnection:
    """One raw keep-alive HTTP/1.1 connection, so a test decides exactly when clients connect."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def send_get(self, path: str) -> None:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode())

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-cased names) and body of the next response."""
        head = self._read_until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self._read_exactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send_get(path)
        return self.read_response()

    def closed_by_server(self) -> bool:
        """Wait (up to the socket timeout) for the server to close; True if it did."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self._buffer += chunk
