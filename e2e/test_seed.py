"""Black box: `make seed`'s script writes the quick start's keys where the proxy reads them."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.servers import ROOT, reserve_port


def run_seed(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """scripts/seed.py as `make seed` runs it."""
    return subprocess.run(
        [sys.executable, "scripts/seed.py"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ".", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_seeded_keys_are_read_through_the_proxy(redis_factory, start_proxy) -> None:
    backing = redis_factory()
    done = run_seed({"REDIS_URL": backing.url})
    assert done.returncode == 0, done.stderr
    assert "wrote 4 keys" in done.stdout
    proxy = start_proxy(backing)
    greeting = proxy.get("/get/greeting")
    assert (greeting.status_code, greeting.content) == (200, b"hello")
    assert proxy.get("/get/path%2Fwith%2Fslashes").content.startswith(b"read me as")
    assert proxy.get("/get/binary").content == bytes(range(8))


def test_seed_without_a_redis_says_so_and_fails() -> None:
    done = run_seed({"REDIS_URL": f"redis://127.0.0.1:{reserve_port()}/0"})
    assert done.returncode == 1
    assert "seed: cannot write to redis://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
