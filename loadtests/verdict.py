"""Turn a run's numbers into its expectations, a printed verdict and verdict.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtests.adapters.report import render_lines as render_collector
from loadtests.options import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS
from loadtests.verify import SourceResult, Totals
from reference.fifo import PIPE_BUF

# A JSON escape of one character is at most 6 bytes (\\u0041) and the character at least 1: a tear that
# forms one makes a corrupt row read back at most 5 bytes shorter than what arrived.
ESCAPE_SHRINK_MAX = 5
# Most sources listed one by one in the printed table; the JSON report always has them all.
TABLE_SOURCES = 20
# Floats in verdict.json carry at most this many decimals (a millisecond, a thousandth of a row/s): more would be
# noise from the clock and from float sums, e.g. 82.92732600000363 seconds.
JSON_DECIMALS = 3
PASS_MARK, FAIL_MARK = "✓", "✗"


@dataclass
class Latency:
    """Write latency from Locust's statistics, and the time users spent parked on a full pipe."""

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    blocked_s: float = 0.0


@dataclass
class Expectation:
    """One checked expectation: the option that sets it, its threshold and what the run observed."""

    name: str
    what: str
    op: str  # "<=", ">=" or "="
    threshold: float
    observed: float

    @property
    def passed(self) -> bool:
        """Whether the observed value is within the threshold."""
        if self.op == "<=":
            return self.observed <= self.threshold
        if self.op == ">=":
            return self.observed >= self.threshold
        return self.observed == self.threshold

    def failure(self) -> str:
        """One line naming the expectation, both numbers and the option that sets it."""
        hint = f" (--{self.name.replace('_', '-')})" if self.name.startswith(("max_", "min_")) else ""
        return f"{self.name}: {self.what} {_number(self.observed)}, expected {self.op} {_number(self.threshold)}{hint}"


@dataclass
class Verdict:
    """Everything the run measured and every expectation checked against it."""

    run_id: str
    scenario: str
    totals: Totals
    sources: list[SourceResult]
    latency: Latency
    rows_per_s: float
    lines_per_s: float
    duration_s: float
    faults: list[str] = field(default_factory=list)
    collector_exit: int | None = None
    collector_peak_rss_mib: float | None = None
    expectations: list[Expectation] = field(default_factory=list)
    # The signal that interrupted the run (SIGINT, SIGTERM), None for a run that ended as planned.
    interrupted: str | None = None
    # A second signal skipped the wait for the last lines to land.
    drain_skipped: bool = False
    # The collector's report (loadtests/adapters/report.py): exit, counters, the stop's cost, loss explanation.
    collector: dict | None = None
    started_at: str = ""
    ended_at: str = ""
    options: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # One sample of the pipeline per interval (loadtests/timeline.py), and the faults' spans in its seconds.
    timeline: list[dict] = field(default_factory=list)
    fault_spans: list[dict] = field(default_factory=list)
    # A fleet run (docs/fleet.md): one section per application host, and the sources of workers that disappeared
    # mid-run (their lines are unverified: neither landed nor lost in the totals).
    hosts: list[dict] = field(default_factory=list)
    unverified: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """One line per expectation that does not hold."""
        return [e.failure() for e in self.expectations if not e.passed]

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.failures

    @property
    def status(self) -> str:
        """PASS, FAIL or INTERRUPTED (an interrupted run's numbers cover only what it sent before the signal)."""
        if self.interrupted:
            return "INTERRUPTED"
        return "PASS" if self.passed else "FAIL"

    @property
    def exit_code(self) -> int:
        """The process exit status this verdict gives."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_PASS if self.passed else EXIT_FAIL

    def as_dict(self) -> dict:
        """The report as plain data: the JSON boundary."""
        out = asdict(self)
        out["sources"] = [{**asdict(s), "missing": s.missing} for s in self.sources]
        out["expectations"] = [{**asdict(e), "passed": e.passed} for e in self.expectations]
        if self.totals.bytes is not None:
            out["totals"]["bytes"]["unaccounted"] = self.totals.bytes.unaccounted
            out["totals"]["bytes"]["unexplained"] = unexplained_bytes(self.totals)
        out.update(passed=self.passed, status=self.status, exit_code=self.exit_code, failures=self.failures)
        return _rounded(out)


def unexplained_bytes(t: Totals) -> int | None:
    """Unaccounted bytes beyond what corrupt rows can hide; None without byte accounting.

    A corrupt row is measured by re-encoding what PostgreSQL stored, which can read back shorter than the torn
    line was: a tear can make an escape (a backslash from one line before a slash of another: \\/ is stored as /),
    and a tear that joins the head of one line's data to the tail of another's repeats keys inside data, of which
    jsonb keeps the last (the contract passes data to jsonb as written). A row that holds corrupt rows may therefore
    hide up to the bytes those rows store; without corrupt rows the check is exact.
    """
    if t.bytes is None:
        return None
    unaccounted = t.bytes.unaccounted
    if unaccounted <= 0 or not t.corrupt:
        return unaccounted
    pages = t.corrupt + t.bytes.in_corrupt_rows // PIPE_BUF
    return max(0, unaccounted - ESCAPE_SHRINK_MAX * pages - t.bytes.in_corrupt_rows)


def check(verdict: Verdict, options) -> list[Expectation]:
    """Every expectation the options set, with what the run observed (passing or not)."""
    t = verdict.totals
    found: list[Expectation] = []

    def at_most(name: str, what: str, observed: float, most: float | None) -> None:
        if most is not None and most >= 0:  # -1: no limit
            found.append(Expectation(name, what, "<=", most, observed))

    at_most("max_lost", "lost lines", t.lost, options.max_lost)
    at_most("max_duplicated", "duplicated lines", t.duplicated, options.max_duplicated)
    at_most("max_torn", "torn or rejected lines", t.torn_or_rejected, options.max_torn)
    if options.min_torn > 0:
        found.append(Expectation("min_torn", "torn or rejected lines", ">=", options.min_torn, t.torn_or_rejected))
    if options.min_rows_per_s > 0:
        found.append(
            Expectation("min_rows_per_s", "rows/s end to end", ">=", options.min_rows_per_s, verdict.rows_per_s)
        )
    unexplained = unexplained_bytes(t)
    if unexplained is not None:
        at_most("max_unaccounted_bytes", "bytes unaccounted for", abs(unexplained), options.max_unaccounted_bytes)
    hostile_default = 0 if options.hostile_every > 0 else -1
    at_most(
        "max_unexplained_rejections",
        "rejections no bad line explains",
        t.unexplained_rejections,
        hostile_default if options.max_unexplained_rejections is None else options.max_unexplained_rejections,
    )
    at_most(
        "max_bad_accepted",
        "bad lines not rejected",
        t.bad_accepted,
        hostile_default if options.max_bad_accepted is None else options.max_bad_accepted,
    )
    if options.hostile_every > 0:
        found.append(
            Expectation(
                "hostile_sent", "bad lines sent (is the run too short for --hostile-every?)", ">=", 1, t.bad_sent
            )
        )
    found.append(
        Expectation("sent", "lines sent (none: is the run too short, or the FIFO unreadable?)", ">=", 1, t.sent)
    )
    if verdict.collector_peak_rss_mib is not None:
        at_most(
            "max_collector_rss_mib",
            "collector peak RSS in MiB",
            verdict.collector_peak_rss_mib,
            options.max_collector_rss_mib,
        )
    if verdict.collector_exit is not None:
        what = "collector exit status after SIGTERM"
        if verdict.collector_exit and verdict.collector and verdict.collector.get("exit"):
            what += f": {verdict.collector['exit']}"  # the adapter's meaning of the status, when it knows one
        found.append(Expectation("collector_exit", what, "=", 0, verdict.collector_exit))
    if verdict.hosts:
        vanished = sum(len(u["workers"]) for u in verdict.unverified)
        found.append(Expectation("vanished_workers", "workers that disappeared (lines unverified)", "=", 0, vanished))
        reported = sum(1 for h in verdict.hosts if h["state"] == "reported")
        found.append(
            Expectation("hosts_reported", "hosts that drained and reported", ">=", len(verdict.hosts), reported)
        )
    return found


def render(verdict: Verdict) -> str:
    """The human-readable verdict printed at the end of a run: table, figures, every expectation, the outcome."""
    t = verdict.totals
    state = f", INTERRUPTED by {verdict.interrupted}" if verdict.interrupted else ""
    lines = [f"namedpiper verdict: run {verdict.run_id} ({verdict.scenario}){state}, {verdict.duration_s:.1f} s"]
    lines.extend(render_hosts(verdict))
    lines += [
        f"{'source':<14}{'generated':>11}{'sent':>11}{'dropped':>9}{'landed':>11}{'missing':>9}{'dup':>6}{'order':>7}{'corrupt':>9}",
    ]
    for s in verdict.sources[:TABLE_SOURCES]:
        lines.append(
            f"{s.source:<14}{s.generated:>11}{s.sent:>11}{s.dropped:>9}{s.landed:>11}{s.missing:>9}"
            f"{s.duplicated:>6}{s.out_of_order:>7}{s.corrupt:>9}"
        )
    if len(verdict.sources) > TABLE_SOURCES:
        lines.append(f"... {len(verdict.sources) - TABLE_SOURCES} more sources in the JSON report")
    lines.append(
        f"{'total':<14}{t.generated:>11}{t.sent:>11}{t.dropped:>9}{t.landed:>11}"
        f"{t.missing:>9}{t.duplicated:>6}{t.out_of_order:>7}{t.corrupt:>9}"
    )
    rejected = (
        f"{t.unexplained_rejections} rejected lines besides the bad ones"
        if t.bad_sent
        else f"{t.rejected} rejected lines"
    )
    lines.append(
        f"lost {t.lost}, duplicated {t.duplicated}, torn or rejected {t.torn_or_rejected} "
        f"({rejected}, {t.corrupt} corrupt rows that parsed), interrupted by the stop {t.interrupted}"
    )
    if t.bad_sent:
        lines.append(
            f"hostile input: {t.bad_sent} bad lines sent, {t.rejected} lines rejected; unexplained "
            f"rejections {t.unexplained_rejections}, bad lines not rejected {t.bad_accepted}"
        )
    if t.bytes is not None:
        lines.append(
            f"bytes above PIPE_BUF: sent {t.bytes.sent_big}, landed or rejected {t.bytes.accounted}, "
            f"unaccounted {t.bytes.unaccounted} ({unexplained_bytes(t)} beyond what corrupt rows can hide)"
        )
    lat = verdict.latency
    lines.append(
        f"write latency p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms; "
        f"blocked {lat.blocked_s:.2f} s in total"
    )
    lines.append(f"throughput: {verdict.lines_per_s:.0f} lines/s written, {verdict.rows_per_s:.0f} rows/s end to end")
    if verdict.collector_peak_rss_mib is not None:
        lines.append(f"collector peak RSS {verdict.collector_peak_rss_mib} MiB")
    lines.extend(f"fault: {f}" for f in verdict.faults)
    lines.extend(render_collector(verdict.collector, failed=not verdict.passed))
    lines.append("expectations:")
    width = max((len(e.name) for e in verdict.expectations), default=0)
    for e in verdict.expectations:
        mark = PASS_MARK if e.passed else FAIL_MARK
        lines.append(
            f"  {mark} {e.name:<{width}}  {_number(e.observed):>12} {e.op} {_number(e.threshold):<10} {e.what}"
        )
    if verdict.interrupted:
        skipped = "; the drain was skipped (second signal)" if verdict.drain_skipped else ""
        lines.append(
            f"INTERRUPTED by {verdict.interrupted}: {t.landed} of {t.sent} sent lines landed{skipped}; "
            f"exit status {verdict.exit_code}"
        )
    elif verdict.passed:
        lines.append("PASS: every expectation holds")
    else:
        lines.extend(f"FAIL: {f}" for f in verdict.failures)
    return "\n".join(lines)


def render_hosts(verdict: Verdict) -> list[str]:
    """A fleet run's per-host section: totals per host, each host's faults and state, then unverified workers."""
    if not verdict.hosts:
        return []
    lines = [
        f"{'host':<14}{'workers':>8}{'sources':>8}{'sent':>11}{'landed':>11}{'lost':>7}{'dup':>6}{'torn':>6}"
        f"{'rows/s':>9}{'peak RSS':>11}  collector"
    ]
    for h in verdict.hosts:
        rss = f"{h['collector_peak_rss_mib']} MiB" if h.get("collector_peak_rss_mib") is not None else "-"
        rate = f"{h['rows_per_s']:.0f}" if h.get("rows_per_s") is not None else "-"
        collector = h.get("collector_exit_text") or "-"
        lines.append(
            f"{h['host']:<14}{len(h['workers']):>8}{h['sources']:>8}{h['sent']:>11}{h['landed']:>11}{h['lost']:>7}"
            f"{h['duplicated']:>6}{h['torn']:>6}{rate:>9}{rss:>11}  {collector}"
        )
    for h in verdict.hosts:
        lines.extend(f"  {h['host']} fault: {f}" for f in h["faults"])
        if h["state"] != "reported":
            lines.append(f"  {h['host']}: {h['state']}")
    for u in verdict.unverified:
        names = ", ".join(f"{w['client_id']} (index {w['index']})" for w in u["workers"])
        lines.append(
            f"unverified: host {u['host']} lost worker {names} mid-run: its {u['sources']} sources' lines are "
            f"unverified, neither landed nor lost ({u['rows']} rows of them landed; {u['sent_last_report']} sent by "
            "its last report)"
        )
    return lines


def write_report(verdict: Verdict, run_dir: Path) -> Path:
    """Write verdict.json into the run's report folder and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "verdict.json"
    path.write_text(json.dumps(verdict.as_dict(), indent=2, ensure_ascii=False, default=str))
    return path


def _number(value: float) -> str:
    """An integer without decimals, anything else with at most one."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _rounded(value):
    """value with every float rounded to JSON_DECIMALS (nested dicts and lists too)."""
    if isinstance(value, float):
        return round(value, JSON_DECIMALS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
