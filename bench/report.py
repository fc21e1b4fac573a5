"""The benchmark's results: a Markdown table with ratios and targets, and a bar chart."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.anchors import TWEMPROXY, VARNISH


@dataclass(frozen=True)
class Result:
    """One measured scenario; `floor` names the result it is compared with. `role` says what
    was measured: the proxy, an `anchor` (a server a user would run instead, bench/anchors.py)
    or the `ceiling` (bench/resp_ceiling.py)."""

    name: str
    connections: int
    value: float  # req/s, unless `unit` says otherwise
    p50_ms: float
    p99_ms: float
    floor: str | None
    unit: str = "req/s"
    rounds: tuple[float, ...] = ()  # the throughput of each interleaved round
    role: str = "proxy"

    @property
    def timed(self) -> bool:
        return self.unit == "req/s"

    def describe(self) -> str:
        if self.unit == "ms":
            return f"{self.name}: {self.value:.2f} ms (median), worst {self.p99_ms:.2f} ms"
        if not self.timed:
            return f"{self.name}: {self.value:,.0f} {self.unit}"
        return (
            f"{self.name}, {self.connections} conn: {self.value:,.0f} req/s, "
            f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"
        )


@dataclass(frozen=True)
class Target:
    text: str
    measure: Callable[[list[Result]], float]
    met: Callable[[float], bool] | None  # None: reported, with no threshold
    shown: str  # how the value is written; ratios to 3 places, so 0.948 does not read as 0.95


def find(results: list[Result], name: str, connections: int) -> Result:
    return next(r for r in results if r.name == name and r.connections == connections)


def round_ratios(results: list[Result], result: Result) -> list[float]:
    """Round by round, this result's throughput over its floor's, measured moments apart."""
    if result.floor is None:
        return []
    floor = find(results, result.floor, result.connections)
    return [mine / theirs for mine, theirs in zip(result.rounds, floor.rounds, strict=True)]


def ratio_to_floor(results: list[Result], result: Result) -> float | None:
    """The median of the round-by-round ratios: pairs taken side by side cancel the
    machine's slow drifts, which a ratio of two separate medians would not."""
    ratios = round_ratios(results, result)
    return statistics.median(ratios) if ratios else None


def _ratio(name: str, connections: int = 50) -> Callable[[list[Result]], float]:
    return lambda results: ratio_to_floor(results, find(results, name, connections)) or 0.0


def _value(name: str, connections: int) -> Callable[[list[Result]], float]:
    return lambda results: find(results, name, connections).value


def _ratio_to(name: str, other: str, connections: int = 50) -> Callable[[list[Result]], float]:
    """The median of the round-by-round throughput ratios of `name` to `other`."""

    def measure(results: list[Result]) -> float:
        mine, theirs = find(results, name, connections), find(results, other, connections)
        pairs = zip(mine.rounds, theirs.rounds, strict=True)
        return statistics.median(m / t for m, t in pairs)

    return measure


def _p99_to(name: str, other: str, connections: int = 50) -> Callable[[list[Result]], float]:
    """`name`'s p99 over `other`'s, each from its median round."""
    return lambda results: (
        find(results, name, connections).p99_ms / find(results, other, connections).p99_ms
    )


TARGETS = [
    Target(
        "HTTP hit ≥ 0.95× the Flask floor (50 conn)",
        _ratio("HTTP hit"),
        lambda v: v >= 0.95,
        "{:.3f}×",
    ),
    Target(
        "HTTP hit ≥ 1.0× Varnish's hit rate (50 conn)",
        _ratio_to("HTTP hit", VARNISH),
        lambda v: v >= 1.0,
        "{:.3f}×",
    ),
    Target(
        "HTTP hit p99 ≤ 2× Varnish's p99 (50 conn)",
        _p99_to("HTTP hit", VARNISH),
        lambda v: v <= 2.0,
        "{:.2f}× Varnish's",
    ),
    Target(
        "HTTP hit at MAX_PARALLEL=1 ≥ 1.0× Varnish's hit rate (50 conn)",
        _ratio_to("HTTP hit, MAX_PARALLEL=1", VARNISH),
        lambda v: v >= 1.0,
        "{:.3f}×",
    ),
    Target(
        "HTTP hit p99 at MAX_PARALLEL=1 ≤ 2× Varnish's p99 (50 conn)",
        _p99_to("HTTP hit, MAX_PARALLEL=1", VARNISH),
        lambda v: v <= 2.0,
        "{:.2f}× Varnish's",
    ),
    Target(
        "HTTP miss ≥ 0.6× HTTP hit (50 conn)", _ratio("HTTP miss"), lambda v: v >= 0.6, "{:.3f}×"
    ),
    Target(
        "RESP hit against twemproxy (50 conn)", _ratio_to("RESP hit", TWEMPROXY), None, "{:.3f}×"
    ),
    Target(
        "RESP hit pipelined 16-deep against twemproxy (50 conn)",
        _ratio_to("RESP hit, pipelined 16", f"{TWEMPROXY}, pipelined 16"),
        None,
        "{:.3f}×",
    ),
    Target(
        "HTTP hit with 1,000,000 keys cached ≥ 0.9× with 10,000 (50 conn)",
        _ratio("HTTP hit, 1,000,000 keys cached"),
        lambda v: v >= 0.9,
        "{:.3f}×",
    ),
    Target(
        "cold MGET of 1,000 keys within 3× redis-server's own MGET",
        lambda results: (
            _value("cold MGET of 1,000 keys, proxy", 1)(results)
            / _value("cold MGET of 1,000 keys, redis-server", 1)(results)
        ),
        lambda v: v <= 3.0,
        "{:.1f}×",
    ),
    Target(
        "100 concurrent misses on one key → 1 backend GET",
        _value("100 concurrent misses on one key", 100),
        lambda v: v == 1,
        "{:.0f} GET",
    ),
    Target(
        "≤ 400 bytes per cached entry beyond key and value",
        _value("memory per cached entry", 0),
        lambda v: v <= 400,
        "{:.0f} bytes",
    ),
]


def write_report(results: list[Result], out: Path, settings: dict[str, str], method: str) -> None:
    """Print the Markdown report and write it and the chart to `out`; `method` says how
    the timed scenarios were run."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results, settings, method)
    (out / "results.md").write_text(text)
    print("\n" + text)
    chart(results, out / "results.png")
    print(f"bench: wrote {out / 'results.md'} and {out / 'results.png'}")


def markdown(results: list[Result], settings: dict[str, str], method: str) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}), {method}, "
        "load generator on the same machine. Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in settings.items())
        + ".",
        "",
        "| scenario | conn | throughput | p50 | p99 | compared with | ratio | ratio by round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = ratio_to_floor(results, r)
        shown = f"{r.value:.2f} ms" if r.unit == "ms" else f"{r.value:,.0f} {r.unit}"
        latency = (f"{r.p50_ms:.2f} ms", f"{r.p99_ms:.2f} ms") if r.timed else ("", "")
        by_round = ", ".join(f"{x:.2f}" for x in round_ratios(results, r))
        lines.append(
            f"| {r.name} | {r.connections or ''} | {shown} | {latency[0]} | {latency[1]} "
            f"| {r.floor or ''} | {f'{ratio:.2f}×' if ratio is not None else ''} | {by_round} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for target in TARGETS:
        value = target.measure(results)
        met = "reported" if target.met is None else "yes" if target.met(value) else "**no**"
        lines.append(f"| {target.text} | {target.shown.format(value)} | {met} |")
    return "\n".join(lines) + "\n"


def chart(results: list[Result], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the benchmark needs it, and it is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    timed = [r for r in results if r.timed]
    labels = [f"{r.name} ({r.connections} conn)" for r in timed]
    colours = [_colour(r) for r in timed]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(timed) + 1.5))
    axes.barh(labels, [r.value for r in timed], color=colours)
    axes.set_xscale("log")
    axes.invert_yaxis()
    axes.set_xlabel(
        "requests per second (log scale); grey = floor, green = anchor, blue = proxy, "
        "orange = Python ceiling"
    )
    for y, r in enumerate(timed):
        axes.text(r.value, y, f" {r.value:,.0f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _colour(result: Result) -> str:
    colours = {"anchor": "#2ca02c", "ceiling": "#ff7f0e"}
    if result.role in colours:
        return colours[result.role]
    return "#999999" if result.floor is None else "#1f77b4"
