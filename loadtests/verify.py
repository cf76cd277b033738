"""Count, per source and with SQL alone, what landed, went missing, was duplicated, came out of order or tore."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import psycopg2

from loadtests.fifo_client import SourceCounts
from loadtests.window import (
    CLOCK_SKEW_MARGIN,
    REJECTED_WINDOW_SQL,
    WHOLE_TABLE_SESSION_SQL,
    WINDOW_SESSION_SQL,
    scoped,
)
from reference.events import TIME_FORMAT_LENGTH

log = logging.getLogger("namedpiper")

# Per source: rows, distinct seqs, and rows out of order: committed in a later transaction than a row of
# the same source with a higher seq. The heap order (ctid) is no arrival order (COPY fills free space
# anywhere), but a collector's transactions are: xmin orders its batches.
# Every query over logs is scoped to the run's time window ({window}, loadtests/window.py) before it filters by
# run id: the time index finds the run's rows among millions of earlier runs' instead of a scan of every row.
# A row is intact when data._np.chk matches its content (see reference/events.py): a torn line that still
# parsed as JSON fails here. Rows without a chk (written by something else) cannot be checked: intact.
INTACT_SQL = """coalesce((left(trace_id, 6) || '-' || left(md5(concat_ws('|', application_name, environment_name,
           log_event, file_path, host_ip, data->>'message')), 6)) = data->'_np'->>'chk', true)"""
PER_SOURCE_SQL = """
WITH run AS (
    SELECT data->'_np'->>'src' AS src, (data->'_np'->>'seq')::bigint AS seq, xmin::text::bigint AS tx,
           {intact} AS intact
    FROM logs WHERE {window} AND data->'_np'->>'run' = %(run)s
), ordered AS (
    SELECT src, seq, intact, max(seq) FILTER (WHERE intact) OVER (
               PARTITION BY src ORDER BY tx RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen_before
    FROM run
)
SELECT src, count(*) FILTER (WHERE intact) AS rows, count(DISTINCT seq) FILTER (WHERE intact) AS distinct_seq,
       count(*) FILTER (WHERE intact AND seq < seen_before) AS out_of_order,
       count(*) FILTER (WHERE NOT intact) AS corrupt
FROM ordered GROUP BY src
""".replace("{intact}", INTACT_SQL)
# Rejected lines received since the run started. Bookkeeping sits at the end of a line, so a torn piece need not
# carry the run id: the time window is what ties a rejection to a run (runs must not overlap). {length} is a line's
# full length: the reference collector keeps only its first --reject-keep-bytes in raw and the length in raw_length
# (NULL in rows written before the column existed); a table without the column (another collector) keeps whole lines.
REJECTED_SQL = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE reason LIKE 'fragment%%' OR reason LIKE 'unfinished%%') AS no_newline,
       coalesce(sum({length}), 0)::bigint AS raw_bytes
FROM logs_rejected WHERE {rejected_window}
""".replace("{rejected_window}", REJECTED_WINDOW_SQL)
HAS_RAW_LENGTH_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('logs_rejected')
               AND attname = 'raw_length' AND NOT attisdropped)
"""
# While draining, the count inside the window is the progress: a row stamped outside it (a writer's clock off by
# more than the margin) only makes the drain end by --drain-quiet instead of by count; the verdict still finds it.
LANDED_COUNT_TEMPLATE = "SELECT count(*) FROM logs WHERE {window} AND data->'_np'->>'run' = %(run)s"
LANDED_COUNT_SQL = scoped(LANDED_COUNT_TEMPLATE)
REJECTED_COUNT_SQL = "SELECT count(*) FROM logs_rejected WHERE {rejected_window}".replace(
    "{rejected_window}", REJECTED_WINDOW_SQL
)
LANDED_SEQS_SQL = """
SELECT data->'_np'->>'src', (data->'_np'->>'seq')::bigint, {intact},
       application_name, environment_name, log_event, trace_id, file_path, host_ip, data
FROM logs WHERE {window} AND data->'_np'->>'run' = %(run)s AND data->'_np'->>'src' = ANY(%(sources)s)
""".replace("{intact}", INTACT_SQL)
# The generator writes time as "2026-11-28T05:30:00.123456+00:00": the same length in every line.
TIME_TEXT_BYTES = TIME_FORMAT_LENGTH


@dataclass
class SourceResult:
    """The verdict's numbers for one source (one Locust user)."""

    source: str
    generated: int
    sent: int
    dropped: int
    interrupted: int
    bad_sent: int = 0
    landed: int = 0
    rows: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    corrupt: int = 0

    @property
    def missing(self) -> int:
        """Generated lines with no row."""
        return max(0, self.generated - self.landed)


@dataclass
class ByteAccount:
    """With --account-bytes: the bytes of lines above PIPE_BUF sent, and where they went."""

    sent_big: int
    accounted: int
    in_corrupt_rows: int

    @property
    def unaccounted(self) -> int:
        """Bytes sent that neither landed nor were rejected (negative: corrupt rows read back short)."""
        return self.sent_big - self.accounted


@dataclass
class Totals:
    """The run's numbers summed over sources, and what they mean for loss and tearing."""

    generated: int = 0
    sent: int = 0
    dropped: int = 0
    interrupted: int = 0
    landed: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    corrupt: int = 0
    missing: int = 0
    rejected: int = 0
    bad_sent: int = 0
    # Rejections no hostile line sent on purpose explains, and hostile lines no rejection accounts for.
    unexplained_rejections: int = 0
    bad_accepted: int = 0
    torn_or_rejected: int = 0
    lost: int = 0
    # None unless --account-bytes recorded the big lines' sizes.
    bytes: ByteAccount | None = None
    # True when the run's rows were counted over the whole table, not its time window (see window_incomplete).
    whole_table: bool = False


def source_order(source: str) -> tuple:
    """Sort key of a source name: p0u2 before p0u10 (numbers compare as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", source))


def connect(dsn: str):
    """A short-lived autocommit connection for the harness's own queries."""
    conn = psycopg2.connect(dsn, connect_timeout=10, application_name="namedpiper-verify")
    conn.autocommit = True
    return conn


def landed_count(dsn: str, run_id: str, since: datetime, margin: timedelta = CLOCK_SKEW_MARGIN) -> tuple[int, int]:
    """(rows of the run in its time window, rejected lines since the run started): polled while draining."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(WINDOW_SESSION_SQL)
        cur.execute(LANDED_COUNT_SQL, {"run": run_id, "since": since, "margin": margin})
        landed = cur.fetchone()[0]
        cur.execute(REJECTED_COUNT_SQL, {"since": since})
        return landed, cur.fetchone()[0]


def window_incomplete(results: Mapping[str, SourceResult]) -> bool:
    """Whether rows of the run may lie outside its time window, so that only the whole table gives exact numbers.

    A copy of a line (a journal replay, a retried batch) carries the line's bytes, hence its time: when every
    line a source put into the pipe is found in the window, its copies are there too. What can lie outside is a
    line from a writer whose clock is off by more than the margin, which then is missing here, and a corrupt row:
    a tear inside two time stamps splices their digits ("T09:5" of 09:59:59 and "0:01" of 10:00:01 read 09:50:01),
    and a tear across an hour, a day or a year boundary lands hours to a year away. The lines it tore are
    missing too; any corrupt row in the window says a tear happened, so both send the run to the whole table.
    """
    return any(r.corrupt or r.landed < r.generated - r.dropped - r.interrupted for r in results.values())


def verify_run(
    dsn: str,
    run_id: str,
    since: datetime,
    counts: Mapping[str, SourceCounts],
    margin: timedelta = CLOCK_SKEW_MARGIN,
) -> tuple[list[SourceResult], Totals]:
    """Compare what each source sent with what the database holds; return per-source results and totals.

    The rows are looked for in the run's time window first (the time index); when that leaves a line unaccounted
    for, once more over the whole table, so the numbers are exact either way (window_incomplete says when).
    """
    params = {"run": run_id, "since": since, "margin": margin}
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            results = _per_source(cur, params, counts, whole_table=False)
            whole_table = window_incomplete(results)
            if whole_table:
                log.info(
                    "run %s: not every line sent was found intact in the run's time window: verifying over the "
                    "whole table (a scan of every row: slow on a big database)",
                    run_id,
                )
                results = _per_source(cur, params, counts, whole_table=True)
            cur.execute(HAS_RAW_LENGTH_SQL)
            length = "coalesce(raw_length, octet_length(raw))" if cur.fetchone()[0] else "octet_length(raw)"
            cur.execute(REJECTED_SQL.replace("{length}", length), {"since": since})
            rejected, no_newline, rejected_bytes = cur.fetchone()
            landed_bytes, corrupt_bytes = _landed_big_bytes(cur, params, counts, whole_table)
    finally:
        conn.close()
    ordered = sorted(results.values(), key=lambda r: source_order(r.source))
    totals = Totals(
        generated=sum(r.generated for r in ordered),
        sent=sum(r.sent for r in ordered),
        dropped=sum(r.dropped for r in ordered),
        interrupted=sum(r.interrupted for r in ordered),
        landed=sum(r.landed for r in ordered),
        duplicated=sum(r.duplicated for r in ordered),
        out_of_order=sum(r.out_of_order for r in ordered),
        corrupt=sum(r.corrupt for r in ordered),
        missing=sum(r.missing for r in ordered),
        rejected=rejected,
        bad_sent=sum(r.bad_sent for r in ordered),
        whole_table=whole_table,
    )
    # Each hostile line sent on purpose is one rejected line: those explain no missing good line.
    totals.unexplained_rejections = max(0, rejected - totals.bad_sent)
    totals.bad_accepted = max(0, totals.bad_sent - rejected)
    # Lines that did not land are explained by drops, by writes the stop cut short, and by rejected lines
    # (a torn pair of lines shows up as one to three rejected rows); what is left is lost.
    # Per source first: one source's drops or cut writes must not excuse another source's missing lines.
    unexplained = sum(max(0, r.missing - r.dropped - r.interrupted) for r in ordered)
    totals.torn_or_rejected = totals.unexplained_rejections + totals.corrupt
    totals.lost = max(0, unexplained - _lines_explained_by_rejections(totals.torn_or_rejected, unexplained))
    big = [c for c in counts.values() if c.big_lines]
    if big:
        sent_big = sum(length for c in big for _seq, length in c.big_lines)
        sent_big += sum(c.partial_bytes for c in counts.values())
        # A rejected line consumed its newline, unless it was a fragment glued before a valid line or the
        # unfinished tail the collector held when it stopped.
        totals.bytes = ByteAccount(
            sent_big=sent_big,
            accounted=landed_bytes + rejected_bytes + (rejected - no_newline),
            in_corrupt_rows=corrupt_bytes,
        )
    return ordered, totals


def _per_source(
    cur, params: Mapping[str, object], counts: Mapping[str, SourceCounts], whole_table: bool
) -> dict[str, SourceResult]:
    """Each source's counters with what PER_SOURCE_SQL found of its rows (in the window, or in the whole table)."""
    results = {
        src: SourceResult(src, c.generated, c.sent, c.dropped, c.interrupted, c.bad_sent) for src, c in counts.items()
    }
    cur.execute(WHOLE_TABLE_SESSION_SQL if whole_table else WINDOW_SESSION_SQL)
    cur.execute(scoped(PER_SOURCE_SQL, whole_table), params)
    for src, rows, distinct, out_of_order, corrupt in cur.fetchall():
        r = results.setdefault(src, SourceResult(src, 0, 0, 0, 0))
        r.rows, r.landed, r.out_of_order, r.corrupt = rows, distinct, out_of_order, corrupt
        r.duplicated = rows - distinct
    return results


def _lines_explained_by_rejections(rejected: int, unexplained: int) -> int:
    # Tearing merges or splits lines: each rejected row stands for at least one missing line and, when two
    # writers interleave, for up to two. Without byte accounting this is the honest upper bound.
    return min(unexplained, 2 * rejected)


def _landed_big_bytes(
    cur, params: Mapping[str, object], counts: Mapping[str, SourceCounts], whole_table: bool
) -> tuple[int, int]:
    """(bytes of the big lines that landed, of which in corrupt rows): recorded sizes, re-encoded for corrupt rows."""
    sizes = {(src, seq): length for src, c in counts.items() for seq, length in c.big_lines}
    if not sizes:
        return 0, 0
    cur.execute(WHOLE_TABLE_SESSION_SQL if whole_table else WINDOW_SESSION_SQL)
    cur.execute(scoped(LANDED_SEQS_SQL, whole_table), {**params, "sources": sorted({src for src, _ in sizes})})
    total = corrupt = 0
    for src, seq, intact, *fields, data in cur.fetchall():
        if intact:
            total += sizes.get((src, seq), 0)
        else:
            # A corrupt row holds pieces of several lines; its bytes are what it parsed from. The generator
            # writes compact JSON, so re-encoding gives the same length whatever order jsonb keeps keys in.
            names = ("application_name", "environment_name", "log_event", "trace_id", "file_path", "host_ip")
            event = {"time": "", **dict(zip(names, fields, strict=True)), "data": data}
            length = len(orjson.dumps(event)) + TIME_TEXT_BYTES + 1
            total += length
            corrupt += length
    return total, corrupt
