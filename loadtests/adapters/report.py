"""What the verdict says about the collector: its exit, its counters, what the stop cost, and where losses came from."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import psycopg2

# Lines of the collector's log printed under a failed verdict (the whole log stays in the run's folder).
FAIL_LOG_LINES = 20
# Each quoted log line is cut to this many characters (syslog-ng quotes whole SQL statements in its errors).
FAIL_LOG_LINE_CHARS = 240
# Per source: the highest seq that landed and how many distinct seqs did; a seq below the highest that is missing
# was lost while the run went on, one above it was never stored before the stop.
SEQ_SQL = """
SELECT data->'_np'->>'src', max((data->'_np'->>'seq')::bigint), count(DISTINCT (data->'_np'->>'seq')::bigint)
FROM logs WHERE data->'_np'->>'run' = %(run)s GROUP BY 1
"""
# Rows without the harness's bookkeeping: bad lines stored anyway (counted against a baseline taken at the start).
UNMARKED_SQL = "SELECT count(*) FROM logs WHERE data->'_np'->>'run' IS NULL"


def exit_text(status: int | None, meaning: str = "") -> str:
    """'exit status 0', 'exit status 4 (meaning)', 'killed by SIGSEGV', or 'no exit status ...' for None."""
    if status is None:
        return "no exit status (not started by the harness)"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status} ({meaning})" if meaning else f"exit status {status}"


@dataclass
class LossExplanation:
    """Where lost and bad lines went, for a collector that keeps no logs_rejected."""

    stored_although_bad: int = 0
    dropped_silently: int = 0
    lost_mid_run: int = 0
    lost_at_stop: int = 0


@dataclass
class CollectorReport:
    """The collector's side of the verdict."""

    adapter: str
    command: str = ""
    exit_status: int | None = None
    exit: str = ""
    log_path: str = ""
    log_tail: list[str] = field(default_factory=list)
    # The collector's own counters: sampled during the run (seconds from the start, counters), and just before the
    # stop signal; queued_at_stop is what a collector that drops its queue at the signal lost to the stop itself.
    samples: list[tuple[float, dict]] = field(default_factory=list)
    at_stop: dict | None = None
    queued_at_stop: int | None = None
    waited_for_queue_s: float = 0.0
    # Stops by a restart fault: the exit and the lines still queued at the signal, each.
    fault_stops: list[dict] = field(default_factory=list)
    keeps_rejected: bool = True
    explanation: LossExplanation | None = None

    def as_dict(self) -> dict:
        """Plain data for verdict.json."""
        return asdict(self)


def explain(conn, run_id: str, sources: Sequence, bad_sent: int, unmarked_before: int) -> LossExplanation:
    """Split bad lines into stored/dropped and lost good lines into mid-run gaps and a tail cut at the stop."""
    with conn.cursor() as cur:
        cur.execute(SEQ_SQL, {"run": run_id})
        seen = {src: (top, distinct) for src, top, distinct in cur.fetchall()}
        cur.execute(UNMARKED_SQL)
        unmarked = cur.fetchone()[0]
    out = LossExplanation()
    out.stored_although_bad = max(0, unmarked - unmarked_before)
    out.dropped_silently = max(0, bad_sent - out.stored_although_bad)
    for s in sources:
        top, distinct = seen.get(s.source, (0, 0))
        gaps = top - distinct
        # Lines after the highest stored seq: the writer's own drops and cut writes explain some of them.
        tail = max(0, s.generated - top - s.dropped - s.interrupted)
        out.lost_mid_run += gaps
        out.lost_at_stop += tail
    return out


def count_unmarked(dsn: str) -> int:
    """Rows in logs without a run id now (the baseline for 'stored although bad'); 0 when it cannot be counted."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="namedpiper-verify")
    except psycopg2.Error:
        return 0
    try:
        with conn.cursor() as cur:
            cur.execute(UNMARKED_SQL)
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg2.Error:
        return 0
    finally:
        conn.close()


def render_lines(report: dict | None, failed: bool) -> list[str]:
    """The verdict's lines about the collector (report as in verdict.json); its log's tail when the run failed."""
    if not report:
        return []
    lines = [f"collector {report['adapter']}: {report['exit']}"]
    counters = report.get("at_stop")
    if counters:
        shown = ", ".join(f"{k} {v}" for k, v in counters.items())
        lines.append(f"collector counters before the stop: {shown}")
    if report.get("queued_at_stop"):
        lines.append(
            f"the stop cost {report['queued_at_stop']} lines: queued in the collector when it was "
            f"signalled (after waiting {report['waited_for_queue_s']:.1f} s for its queue to empty), "
            "not lost while it ran"
        )
    e = report.get("explanation")
    if e:
        lines.append(
            f"no logs_rejected kept: bad lines stored although bad {e['stored_although_bad']}, dropped "
            f"silently {e['dropped_silently']}; good lines lost mid-run {e['lost_mid_run']} (gaps), "
            f"lost at stop {e['lost_at_stop']} (after the last stored line)"
        )
    if failed and report.get("log_path"):
        lines.append(f"collector log {report['log_path']}, last lines:")
        lines.extend(f"  | {_cut(line)}" for line in report.get("log_tail") or ["(no output)"])
    return lines


def _cut(line: str) -> str:
    """line, shortened to FAIL_LOG_LINE_CHARS with an ellipsis (the whole log stays in its file)."""
    return line if len(line) <= FAIL_LOG_LINE_CHARS else line[: FAIL_LOG_LINE_CHARS - 1] + "…"
