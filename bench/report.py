"""The benchmark's results: a Markdown table with ratios and targets, and a bar chart."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One measured scenario; `floor` names the result it is compared with. A `ceiling` is a
    reference server (bench/resp_ceiling.py), measured like the proxy but not the proxy."""

    name: str
    connections: int
    value: float  # req/s, unless `unit` says otherwise
    p50_ms: float
    p99_ms: float
    floor: str | None
    unit: str = "req/s"
    rounds: tuple[float, ...] = ()  # the throughput of each interleaved round
    ceiling: bool = False

    @property
    def timed(self) -> bool:
        return self.unit == "req/s"

    def describe(self) -> str:
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
    met: Callable[[float], bool]
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


def _median_throughput(name: str, connections: int) -> Callable[[list[Result]], float]:
    """The median of the rounds' throughputs: the statistic the ratios use. (The table shows
    the median round itself, with its latencies: for an even count, the lower middle one.)"""
    return lambda results: statistics.median(find(results, name, connections).rounds)


TARGETS = [
    Target(
        "HTTP hit ≥ 0.95× the Flask floor (50 conn)",
        _ratio("HTTP hit"),
        lambda v: v >= 0.95,
        "{:.3f}×",
    ),
    Target(
        "HTTP miss ≥ 0.6× HTTP hit (50 conn)", _ratio("HTTP miss"), lambda v: v >= 0.6, "{:.3f}×"
    ),
    Target(
        "RESP hit ≥ 0.9× redis-server direct (50 conn)",
        _ratio("RESP hit"),
        lambda v: v >= 0.9,
        "{:.3f}×",
    ),
    Target(
        "RESP hit pipelined 16-deep ≥ 300k GET/s",
        _median_throughput("RESP hit, pipelined 16", 50),
        lambda v: v >= 300_000,
        "{:,.0f} GET/s",
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
        shown = f"{r.value:,.0f} {r.unit}"
        latency = (f"{r.p50_ms:.2f} ms", f"{r.p99_ms:.2f} ms") if r.timed else ("", "")
        by_round = ", ".join(f"{x:.2f}" for x in round_ratios(results, r))
        lines.append(
            f"| {r.name} | {r.connections or ''} | {shown} | {latency[0]} | {latency[1]} "
            f"| {r.floor or ''} | {f'{ratio:.2f}×' if ratio is not None else ''} | {by_round} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for target in TARGETS:
        value = target.measure(results)
        met = "yes" if target.met(value) else "**no**"
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
    axes.set_xlabel("requests per second (log scale); grey = floor, blue = proxy, orange = ceiling")
    for y, r in enumerate(timed):
        axes.text(r.value, y, f" {r.value:,.0f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _colour(result: Result) -> str:
    if result.floor is None:
        return "#999999"
    return "#ff7f0e" if result.ceiling else "#1f77b4"
