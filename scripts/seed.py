"""`make seed`: write a few sample keys into the Redis the proxy is configured for.

REDIS_URL is read as the proxy reads it (the environment over `.env`), so after `make run`
these keys are what the quick start reads through the proxy. No redis-cli needed.
"""

from __future__ import annotations

import sys

import redis

from proxy.config import ConfigError, Settings, redact_url

SAMPLES: dict[str, bytes] = {
    "greeting": b"hello",
    "user:1:name": b"Ada Lovelace",
    "path/with/slashes": b"read me as /get/path%2Fwith%2Fslashes or /get/path/with/slashes",
    "binary": bytes(range(8)),
}


def main() -> int:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 2
    shown = redact_url(settings.redis_url)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, protocol=2)
    try:
        client.mset(SAMPLES)
    except redis.RedisError as exc:
        print(f"seed: cannot write to {shown}: {exc}", file=sys.stderr)
        return 1
    print(f"seed: wrote {len(SAMPLES)} keys to {shown}: {', '.join(SAMPLES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
