"""The module map's arrows, read from the source: no import cycles, and the layers hold.

Every `import` of a `proxy` module counts, those under `if TYPE_CHECKING:` included: a
type-only import is still coupling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
FRONT_ENDS = ("proxy.http", "proxy.resp")
# Modules (or packages) that import no proxy module outside themselves.
LEAVES = [
    "proxy.config",
    "proxy.config.tls",
    "proxy.config.values",
    "proxy.config.variables",
    "proxy.entries",
    "proxy.errors",
    "proxy.failover",
    "proxy.logs",
    "proxy.metrics",
]
# What a front end may never import: the other front end, and the parts only the root wires.
HIDDEN_FROM_FRONT_ENDS = (
    "proxy.service",
    "proxy.worker",
    "proxy.backend",
    "proxy.link",
    "proxy.redis_errors",
    "proxy.invalidation",
    "proxy.shards",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def proxy_imports(path: Path) -> set[str]:
    """The proxy modules `path` imports, by full name (`from proxy.resp import codec` counts
    as proxy.resp.codec)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in GRAPH_NODES}


GRAPH_NODES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {module_name(path): proxy_imports(path) for path in PACKAGE.rglob("*.py")}


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Every import cycle, found by depth-first search (each reported from where it closes)."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> Iterator[list[str]]:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                yield [*path[path.index(imported) :], imported]
            elif imported not in state:
                yield from visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            yield from visit(module, [module])


def test_the_graph_sees_the_package() -> None:
    assert {"proxy.service", "proxy.cache", "proxy.http.app", "proxy.resp.server"} <= GRAPH_NODES
    assert "proxy.cache" in GRAPH["proxy.service"]


def test_cycles_are_found_when_there_are_some() -> None:
    assert list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    assert list(cycles(GRAPH)) == []


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if under(m, "proxy.http")))
def test_the_http_front_end_imports_neither_resp_nor_the_root_s_parts(module: str) -> None:
    forbidden = ("proxy.resp", *HIDDEN_FROM_FRONT_ENDS)
    assert [m for m in GRAPH[module] if any(under(m, f) for f in forbidden)] == []


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if under(m, "proxy.resp")))
def test_the_resp_front_end_imports_neither_http_nor_the_root_s_parts(module: str) -> None:
    forbidden = ("proxy.http", *HIDDEN_FROM_FRONT_ENDS)
    assert [m for m in GRAPH[module] if any(under(m, f) for f in forbidden)] == []


@pytest.mark.parametrize(
    "leaf",
    LEAVES,
)
def test_leaves_import_no_other_proxy_module(leaf: str) -> None:
    package = leaf.rsplit(".", 1)[0] if leaf.count(".") > 1 else leaf
    assert [m for m in GRAPH[leaf] if not under(m, package)] == []


def test_the_cache_knows_no_front_end_and_no_redis_client() -> None:
    assert GRAPH["proxy.cache"] <= {"proxy.batches", "proxy.errors", "proxy.entries", "proxy.reads"}
    assert GRAPH["proxy.batches"] <= {"proxy.errors", "proxy.reads"}


def test_only_the_worker_imports_the_composition_root() -> None:
    assert [m for m, imported in GRAPH.items() if "proxy.service" in imported] == ["proxy.worker"]
