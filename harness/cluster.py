"""A real Redis Cluster on loopback: three redis-servers with `cluster-enabled`, by handle.

Slots are assigned through redis-py (CLUSTER ADDSLOTSRANGE, CLUSTER MEET), the way
`redis-cli --cluster create` does it, so no redis-cli is needed: a redis-server installed
from PyPI has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from harness.servers import RedisServer, poll, reserve_port, self_signed_certificate

SLOTS = 16384
FORM_DEADLINE = 20.0  # seconds for the nodes to meet and agree; generous


def node_args(bus_port: int) -> list[str]:
    """A cluster node that keeps serving its slots while another primary is down (with the
    default `cluster-require-full-coverage yes`, one primary down stops them all)."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",  # in the node's own --dir: kept across restarts
        "--cluster-port", str(bus_port),  # port + 10000 may not exist
        "--cluster-node-timeout", "2000",
        "--cluster-require-full-coverage", "no",
    ]  # fmt: skip


class Cluster:
    """`size` primaries, no replicas, the slots split evenly in order; `nodes[0]` first.
    With `tls`, every node listens for TLS only, the cluster bus too, all with one
    self-signed certificate for 127.0.0.1 (`certificate`)."""

    def __init__(self, workdir: Path, size: int = 3, tls: bool = False) -> None:
        self.workdir = workdir
        self.certificate: tuple[Path, Path] | None = None
        if tls:
            workdir.mkdir(parents=True, exist_ok=True)
            self.certificate = self_signed_certificate(workdir)
        self.bus_ports: list[int] = []
        self.nodes = [self._node() for _ in range(size)]
        self.url = self.nodes[0].url

    def _node(self) -> RedisServer:
        self.bus_ports.append(reserve_port())
        args = node_args(self.bus_ports[-1])
        if self.certificate is not None:
            args += ["--tls-cluster", "yes"]
        workdir = self.workdir / f"node-{len(self.bus_ports) - 1}"
        tls = self.certificate is not None
        return RedisServer(workdir, args, tls=tls, certificate=self.certificate)

    def start(self) -> Cluster:
        try:
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        for node in self.nodes:
            node.start()
        step = SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * step - 1
            node.client.execute_command("CLUSTER ADDSLOTSRANGE", index * step, last)
        first, bus = self.nodes[0].port, self.bus_ports[0]
        for node in self.nodes[1:]:
            node.client.execute_command("CLUSTER MEET", "127.0.0.1", first, bus)
        poll(self.formed, FORM_DEADLINE, "the cluster to form")

    def add_node(self) -> RedisServer:
        """One more node, serving no slot until one is moved to it."""
        node = self._node().start()
        self.nodes.append(node)
        node.client.execute_command(
            "CLUSTER MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
        )
        poll(self.formed, FORM_DEADLINE, "the new node to join")
        return node

    def formed(self) -> bool:
        """Every node answers, knows every other and sees every slot served."""
        try:
            return all(self._agrees(node) for node in self.nodes)
        except redis.RedisError:
            return False

    def _agrees(self, node: RedisServer) -> bool:
        info = node.client.execute_command("CLUSTER INFO")
        return (
            info["cluster_state"] == "ok"
            and int(info["cluster_known_nodes"]) == len(self.nodes)
            and int(info["cluster_slots_ok"]) == SLOTS
        )

    def client(self) -> RedisCluster:
        """A cluster client of the tests' own (RESP2)."""
        tls: dict[str, Any] = {}
        if self.certificate is not None:
            tls = {"ssl": True, "ssl_ca_certs": str(self.certificate[0])}
        node = self.nodes[0]
        return RedisCluster(host="127.0.0.1", port=node.port, protocol=2, socket_timeout=5, **tls)

    def owner(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now, as the first node that answers says."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            try:
                ranges = node.client.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            for first, last, primary, *_ in ranges:
                if first <= slot <= last:
                    return self.by_port(int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def by_port(self, port: int) -> RedisServer:
        [node] = [node for node in self.nodes if node.port == port]
        return node

    def keys_per_node(self, prefix: str, per_node: int) -> Iterator[str]:
        """`per_node` keys named `prefix:N` for each node's slots (the slots are in order)."""
        step = SLOTS // len(self.nodes)
        wanted = {index: per_node for index in range(len(self.nodes))}
        number = 0
        while any(wanted.values()):
            name = f"{prefix}:{number}"
            index = min(key_slot(name.encode()) // step, len(self.nodes) - 1)
            if wanted[index]:
                wanted[index] -= 1
                yield name
            number += 1

    def node_id(self, node: RedisServer) -> str:
        return str(node.client.execute_command("CLUSTER MYID").decode())

    def move_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Reshard one slot as `redis-cli --cluster reshard` does: mark it importing and
        migrating, MIGRATE its keys in batches, then give it to `target` on every node."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := source.client.execute_command("CLUSTER GETKEYSINSLOT", slot, 10):
            source.client.execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
        for node in (target, source, *self.nodes):
            node.client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
