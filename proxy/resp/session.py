"""A RESP client's session, and what it may learn about the server it is connected to."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from proxy.access import Access


class ServerView(Protocol):
    """What INFO and CONFIG GET read of the server the session is on (RespServer)."""

    def info_fields(self) -> Mapping[str, int | str]:
        """INFO's live fields by Redis's names (connected_clients, keyspace_hits, ...)."""
        ...

    def config(self) -> Mapping[str, str]:
        """CONFIG GET's parameters by Redis's names (maxclients, maxmemory, ...)."""
        ...


@dataclass
class Session:
    """The per-connection state commands may read and change."""

    id: int
    server: ServerView
    access: Access
    authenticated: bool = True  # False until AUTH when a password is set (see RespServer)
    protocol: int = 2  # until HELLO 3
    name: bytes | None = None
    library: tuple[bytes, bytes] = (b"", b"")  # CLIENT SETINFO LIB-NAME and LIB-VER
    peer: str = ""  # the client's address as CLIENT INFO shows it (host:port)
    local: str = ""  # the proxy's end of the connection
    connected_at: float = field(default_factory=time.monotonic)
