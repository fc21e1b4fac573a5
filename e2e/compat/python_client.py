"""A Python Redis client, with its default settings, doing what a user does first against the
proxy. Usage: python python_client.py PORT PREFIX LIBRARY [PROTOCOL] [async]

LIBRARY is `redis` (redis-py) or `valkey` (valkey-py); PROTOCOL 2 or 3 is passed as the client's
`protocol` (omitted: the library's default). Prints its results as JSON (see
e2e/test_clients.py), waits for a line on stdin (the proxy restarts meanwhile), reads once more
and prints that too.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from typing import Any

port, prefix, library, *options = sys.argv[1:]
module: Any = importlib.import_module(library)
settings: dict[str, Any] = {"host": "127.0.0.1", "port": int(port), "decode_responses": True}
if options and options[0] in ("2", "3"):
    settings["protocol"] = int(options[0])
names = [f"{prefix}:p{index}" for index in range(100)]


async def settle(answer: Any) -> Any:
    """The asyncio client's answers are awaited; the sync client's are ready."""
    return await answer if inspect.isawaitable(answer) else answer


async def run(client: Any) -> None:
    try:
        write_error = f"no error: {await settle(client.set(f'{prefix}:written', 'x'))!r}"
    except module.ResponseError as error:
        write_error = str(error)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    results = {
        "hit": await settle(client.get(f"{prefix}:hit")),
        "miss": await settle(client.get(f"{prefix}:absent")),
        "mget": await settle(client.mget([f"{prefix}:hit", f"{prefix}:absent", f"{prefix}:p1"])),
        "pipeline": await settle(pipe.execute()),
        "ping": await settle(client.ping()),
        "write_error": write_error,
    }
    print(json.dumps(results), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"after_restart": await settle(client.get(f"{prefix}:hit"))}), flush=True)
    await settle(client.aclose() if hasattr(client, "aclose") else client.close())


kind = module.asyncio.Redis if "async" in options else module.Redis
asyncio.run(run(kind(**settings)))
