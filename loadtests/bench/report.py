"""The benchmark's table: its rows, the targets and their checks, the ratios, and percentiles (all pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The latency target holds at 10,000 lines/s, the rate the latency run writes at unless told otherwise.
LATENCY_RATE = 10_000


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric key, its label and unit, and the decimals shown."""

    key: str
    label: str
    unit: str
    digits: int = 0


ROWS = (
    Row("copy_rows_per_s", "COPY limit: one COPY stream (psycopg2 copy_expert)", "rows/s"),
    Row("collector_rows_per_s", "reference collector: FIFO to visible rows", "rows/s"),
    Row("collector_vs_copy", "  collector / COPY limit", "x", 2),
    Row("naive_rows_per_s", "naive collector: readline + INSERT per line", "rows/s"),
    Row("collector_vs_naive", "  collector / naive", "x", 1),
    Row("collector_peak_rss_mib", "collector peak RSS (VmHWM)", "MiB", 1),
    Row("collector_cpu_us_per_row", "collector CPU per row, all threads", "us/row", 1),
    Row("collector_main_cpu_us_per_row", "  of which the main thread (read, split, parse)", "us/row", 1),
    Row("collector_startup_cpu_ms", "collector start-up CPU (not in the rows above)", "ms"),
    Row("latency_p50_ms", "emit-to-visible p50 at {rate:,} lines/s", "ms"),
    Row("latency_p99_ms", "emit-to-visible p99 at {rate:,} lines/s", "ms"),
    Row("parse_us_per_line", "parse_line alone, CPU, one process (best of 5)", "us/line", 2),
    Row("parse_lines_us_per_line", "parse_lines, a read (2,500 lines) at a time, CPU", "us/line", 2),
    Row("ind_copy_rows_per_s", "independent lines: COPY limit", "rows/s"),
    Row("ind_collector_rows_per_s", "independent lines: reference collector", "rows/s"),
    Row("ind_collector_vs_copy", "  collector / COPY limit", "x", 2),
    Row("ind_collector_cpu_us_per_row", "  collector CPU per row, all threads", "us/row", 1),
    Row("ind_collector_main_cpu_us_per_row", "  of which the main thread", "us/row", 1),
    Row("ind_parse_us_per_line", "  parse_line alone, CPU (best of 5)", "us/line", 2),
    Row("ind_parse_lines_us_per_line", "  parse_lines, a read at a time, CPU", "us/line", 2),
    Row("factory_lines_per_s", "EventFactory, one process", "lines/s"),
    Row("emitter_lines_per_s", "reference emitter --writers 2 into cat", "lines/s"),
    Row("locust_lines_per_s", "Locust --processes 2 -u 20 into cat", "lines/s"),
    Row("fifo_mb_per_s", "raw FIFO: 1 MiB writes, 64 KiB pipe", "MB/s"),
    Row("fifo_big_pipe_mb_per_s", "raw FIFO: 1 MiB writes, 1 MiB pipe", "MB/s"),
)


@dataclass(frozen=True)
class Target:
    """A bound on one metric; sizes limits it to some size classes, rate to one latency-run rate."""

    key: str
    op: str  # ">=" or "<="
    bound: float
    sizes: frozenset[str] | None = None
    rate: int | None = None

    def text(self) -> str:
        """The bound as shown in the table."""
        return f"{self.op} {self.bound:,g}"


# Issue 11: on small lines PostgreSQL, not the Python side, must be the limit; CPU per line is the load-independent
# figure behind the ratio.
TARGETS = (
    Target("collector_vs_copy", ">=", 0.9, sizes=frozenset({"small"})),
    Target("collector_cpu_us_per_row", "<=", 3.5, sizes=frozenset({"small"})),
    Target("collector_main_cpu_us_per_row", "<=", 3.0, sizes=frozenset({"small"})),
    Target("ind_collector_vs_copy", ">=", 0.9),
    Target("ind_collector_cpu_us_per_row", "<=", 3.5),
    Target("ind_collector_main_cpu_us_per_row", "<=", 3.0),
    Target("collector_vs_naive", ">=", 30),
    Target("collector_peak_rss_mib", "<=", 100),
    Target("latency_p99_ms", "<=", 250, rate=LATENCY_RATE),
    Target("emitter_lines_per_s", ">=", 150_000, sizes=frozenset({"small"})),
)


@dataclass(frozen=True)
class Check:
    """A target applied to a run: PASS, MISS, n/a (not for this size or rate) or - (not measured)."""

    target: Target
    value: float | None
    result: str


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def derive(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """metrics plus the ratios computed from them (collector / COPY limit, collector / naive)."""
    out = dict(metrics)
    out["collector_vs_copy"] = ratio(metrics.get("collector_rows_per_s"), metrics.get("copy_rows_per_s"))
    out["ind_collector_vs_copy"] = ratio(metrics.get("ind_collector_rows_per_s"), metrics.get("ind_copy_rows_per_s"))
    out["collector_vs_naive"] = ratio(metrics.get("collector_rows_per_s"), metrics.get("naive_rows_per_s"))
    return out


def check_targets(
    metrics: dict[str, float | None], size: str, latency_rate: int = LATENCY_RATE, targets: tuple[Target, ...] = TARGETS
) -> list[Check]:
    """Each target against the measured value."""
    checks = []
    for t in targets:
        value = metrics.get(t.key)
        if (t.sizes is not None and size not in t.sizes) or (t.rate is not None and latency_rate != t.rate):
            result = "n/a"
        elif value is None:
            result = "-"
        else:
            met = value >= t.bound if t.op == ">=" else value <= t.bound
            result = "PASS" if met else "MISS"
        checks.append(Check(t, value, result))
    return checks


def format_value(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; "skipped" when it was not measured."""
    if value is None:
        return "skipped"
    return f"{value:,.{digits}f}"


def render_table(
    metrics: dict[str, float | None],
    checks: list[Check],
    *,
    title: str = "",
    latency_rate: int = LATENCY_RATE,
    rows: tuple[Row, ...] = ROWS,
) -> str:
    """The printed table: measurement, value, unit, target and result, one row per metric."""
    by_key = {c.target.key: c for c in checks}
    table = [("measurement", "value", "unit", "target", "result")]
    for row in rows:
        check = by_key.get(row.key)
        table.append(
            (
                row.label.format(rate=latency_rate),
                format_value(metrics.get(row.key), row.digits),
                row.unit,
                check.target.text() if check else "",
                check.result if check else "",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = [title] if title else []
    for r in table:
        lines.append(
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip()
        )
        if r is table[0]:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100) of values, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
