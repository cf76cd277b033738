"""Turn a run's numbers into a printed table, a JSON report and a pass/fail against the scenario's expectations."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtests.verify import SourceResult
from reference.fifo import PIPE_BUF

# A JSON escape of one character is at most 6 bytes (\\u0041) and the character at least 1: a tear that
# forms one makes a corrupt row read back at most 5 bytes shorter than what arrived.
ESCAPE_SHRINK_MAX = 5
# Most sources listed one by one in the printed table; the JSON report always has them all.
TABLE_SOURCES = 20


@dataclass
class Verdict:
    """Everything the run measured, and the expectations that failed."""

    run_id: str
    scenario: str
    totals: dict
    sources: list[SourceResult]
    latency_ms: dict
    rows_per_s: float
    lines_per_s: float
    duration_s: float
    faults: list[str] = field(default_factory=list)
    collector_exit: int | None = None
    collector_peak_rss_mib: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.failures

    def as_dict(self) -> dict:
        """The report as plain data."""
        out = asdict(self)
        out["sources"] = [{**asdict(s), "missing": s.missing} for s in self.sources]
        out["passed"] = self.passed
        return out


def unexplained_bytes(t: dict) -> int:
    """Unaccounted bytes beyond what corrupt rows can hide.

    A corrupt row is measured by re-encoding what PostgreSQL stored, and a tear can make an escape that reads
    back shorter (a backslash from one line before a slash of another: \\/ is stored as /; \\u00e9 as é).
    Each splice, at most one per PIPE_BUF page of the row, may shrink it by up to ESCAPE_SHRINK_MAX bytes.
    """
    unaccounted = t["unaccounted_bytes"]
    if unaccounted <= 0:
        return unaccounted
    pages = t.get("corrupt", 0) + t.get("bytes_in_corrupt_rows", 0) // PIPE_BUF
    return max(0, unaccounted - ESCAPE_SHRINK_MAX * pages)


def check(verdict: Verdict, options) -> list[str]:
    """Compare the verdict with the expectations in options; return one line per failed expectation."""
    t = verdict.totals
    failures = []

    def limit(name: str, value: float, most: float) -> None:
        if most >= 0 and value > most:
            failures.append(f"{name}: {value} > {most} allowed (--{name.replace('_', '-')})")

    limit("max_lost", t["lost"], options.max_lost)
    limit("max_duplicated", t["duplicated"], options.max_duplicated)
    limit("max_torn", t["torn_or_rejected"], options.max_torn)
    if t["torn_or_rejected"] < options.min_torn:
        failures.append(f"min_torn: {t['torn_or_rejected']} torn or rejected lines < {options.min_torn} expected")
    if options.min_rows_per_s and verdict.rows_per_s < options.min_rows_per_s:
        failures.append(f"min_rows_per_s: {verdict.rows_per_s:.0f} rows/s < {options.min_rows_per_s:.0f} expected")
    if "unaccounted_bytes" in t:
        limit("max_unaccounted_bytes", abs(unexplained_bytes(t)), options.max_unaccounted_bytes)
    hostile_default = 0 if options.hostile_every > 0 else -1
    for name in ("unexplained_rejections", "bad_accepted"):
        most = getattr(options, f"max_{name}")
        limit(f"max_{name}", t[name], hostile_default if most is None else most)
    if options.hostile_every > 0 and t["bad_sent"] == 0:
        failures.append("hostile input: no bad line was sent (is the run too short for --hostile-every?)")
    if t["sent"] == 0:
        failures.append("nothing was sent: no user wrote a line (is the run too short, or the FIFO unreadable?)")
    if verdict.collector_peak_rss_mib is not None:
        limit("max_collector_rss_mib", verdict.collector_peak_rss_mib, options.max_collector_rss_mib)
    if verdict.collector_exit not in (None, 0):
        failures.append(f"the collector exited with status {verdict.collector_exit} (expected 0 after SIGTERM)")
    return failures


def render(verdict: Verdict) -> str:
    """The human-readable table printed at the end of a run."""
    t = verdict.totals
    lines = [
        f"namedpiper verdict: run {verdict.run_id} ({verdict.scenario}), {verdict.duration_s:.1f} s",
        f"{'source':<14}{'generated':>11}{'sent':>11}{'dropped':>9}{'landed':>11}{'missing':>9}{'dup':>6}{'order':>7}{'corrupt':>9}",
    ]
    for s in verdict.sources[:TABLE_SOURCES]:
        lines.append(f"{s.source:<14}{s.generated:>11}{s.sent:>11}{s.dropped:>9}{s.landed:>11}{s.missing:>9}"
                     f"{s.duplicated:>6}{s.out_of_order:>7}{s.corrupt:>9}")
    if len(verdict.sources) > TABLE_SOURCES:
        lines.append(f"... {len(verdict.sources) - TABLE_SOURCES} more sources in the JSON report")
    lines.append(f"{'total':<14}{t['generated']:>11}{t['sent']:>11}{t['dropped']:>9}{t['landed']:>11}"
                 f"{t['missing']:>9}{t['duplicated']:>6}{t['out_of_order']:>7}{t['corrupt']:>9}")
    rejected = (f"{t['unexplained_rejections']} rejected lines besides the bad ones" if t["bad_sent"]
                else f"{t['rejected']} rejected lines")
    lines.append(f"lost {t['lost']}, duplicated {t['duplicated']}, torn or rejected {t['torn_or_rejected']} "
                 f"({rejected}, {t['corrupt']} corrupt rows that parsed), "
                 f"interrupted by the stop {t['interrupted']}")
    if t["bad_sent"]:
        lines.append(f"hostile input: {t['bad_sent']} bad lines sent, {t['rejected']} lines rejected; unexplained "
                     f"rejections {t['unexplained_rejections']}, bad lines not rejected {t['bad_accepted']}")
    if "unaccounted_bytes" in t:
        lines.append(f"bytes above PIPE_BUF: sent {t['bytes_sent_big']}, landed or rejected {t['bytes_accounted']}, "
                     f"unaccounted {t['unaccounted_bytes']} ({unexplained_bytes(t)} beyond what corrupt rows can hide)")
    lat = verdict.latency_ms
    lines.append(f"write latency p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms, max "
                 f"{lat.get('max', 0):.1f} ms; blocked {lat.get('blocked_s', 0):.2f} s in total")
    lines.append(f"throughput: {verdict.lines_per_s:.0f} lines/s written, {verdict.rows_per_s:.0f} rows/s end to end")
    if verdict.collector_peak_rss_mib is not None:
        lines.append(f"collector peak RSS {verdict.collector_peak_rss_mib} MiB")
    lines.extend(f"fault: {f}" for f in verdict.faults)
    if verdict.passed:
        lines.append("PASS: every expectation holds")
    else:
        lines.extend(f"FAIL: {f}" for f in verdict.failures)
    return "\n".join(lines)


def write_report(verdict: Verdict, run_dir: Path) -> Path:
    """Write verdict.json into the run's report folder and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "verdict.json"
    path.write_text(json.dumps(verdict.as_dict(), indent=2, default=str))
    return path
