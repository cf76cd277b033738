"""The collector's main loop against a scripted source and an in-memory sink: batching, limits, offsets, stopping."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.collector.collector import EXIT_OK, EXIT_REFUSED, EXIT_UNSTORED, Collector, CollectorConfig
from reference.collector.copytext import COPY_READ_BYTES, RowStream, decode_field, row_as_event
from reference.collector.model import CUT_MIN_BYTES, ITEM_OVERHEAD_BYTES, Batch, BatchLimits, Rejection
from reference.collector.retry import Backoff
from reference.collector.sink import SinkCounters, SinkRefused
from reference.collector.source import Chunk
from reference.collector.stop import StopRequest
from reference.collector.validate import parse_line

GOOD = {
    "time": "2026-11-28T05:30:00.123456+00:00",
    "application_name": "app",
    "environment_name": "prod",
    "log_event": "login",
    "trace_id": "0ad94512-df55-11e8-9805-5b8e82d370a6",
    "file_path": "/srv/app.py",
    "host_ip": "10.0.0.1",
    "data": {"user": "u"},
}


def line(seq: int, **changes: object) -> bytes:
    """A valid event line (newline included) whose data carries seq."""
    return orjson.dumps({**GOOD, "data": {"seq": seq}, **changes}) + b"\n"


def seqs(rows: list[bytes]) -> list[int]:
    """The data.seq of each COPY row."""
    return [orjson.loads(row.rstrip(b"\n").split(b"\t")[7])["seq"] for row in rows]


@dataclass
class ScriptedSource:
    """A source that hands out the given chunks, then asks the collector to stop (as a SIGTERM would)."""

    chunks: list[bytes]
    stop: StopRequest
    durable: bool = False
    at_seal: list[bytes] = field(default_factory=list)  # what "the pipe" still holds when the collector stops
    path: str = "scripted"
    capacity: int = 65536
    journal_id: str | None = None
    taken: int = 0
    events: list[str] = field(default_factory=list)
    _offset: int = 0
    _start: int | None = None

    def __post_init__(self) -> None:
        self._pending = list(self.chunks)
        if self.durable:
            self.journal_id = "scripted-journal"

    def wait(self, timeout: float) -> None:
        if not self._pending and not self.stop.requested:
            self.stop.request()

    @property
    def backlog(self) -> int:
        return sum(len(c) for c in self._pending)

    @property
    def ready(self) -> bool:
        return not self.durable or self._start is not None

    @property
    def start(self) -> int | None:
        return self._start

    def start_at(self, committed: int) -> None:
        self.events.append(f"start_at {committed}")
        self._start = self._offset = committed

    def next_chunk(self) -> Chunk | None:
        if not self._pending:
            return None
        data = self._pending.pop(0)
        self.taken += len(data)
        self._offset += len(data)
        return Chunk(data, self._offset if self.durable else None)

    def committed(self, offset: int) -> None:
        self.events.append(f"committed {offset}")

    def close_door(self) -> bool:
        self.events.append("close_door")
        return False  # no FIFO to swap: the collector goes straight to the seal

    writers_gone = True

    def seal(self) -> None:
        self.events.append("seal")
        self._pending.extend(self.at_seal)
        self.at_seal = []

    @property
    def waiting(self) -> int:
        return 0

    def describe(self) -> str:
        return ""

    def stats(self) -> str:
        return ""

    def close(self) -> None:
        self.events.append("close")


@dataclass
class MemorySink:
    """A sink that commits every batch at once into lists (or fails, when told to)."""

    durable: bool = False
    room: bool = True
    fail_with: BaseException | None = None
    drop: bool = False  # take batches but never store them (a database that cannot take them)
    batches: list[Batch] = field(default_factory=list)
    counters: SinkCounters = field(default_factory=SinkCounters)
    events: list[str] = field(default_factory=list)
    _committed: int | None = None

    def describe(self) -> str:
        return "memory"

    def submit(self, batch: Batch) -> None:
        self.raise_if_failed()
        self.batches.append(batch)
        self.counters.batches += 1
        self.counters.rows_written += len(batch.rows)
        self.counters.rejected += len(batch.rejections)
        if not self.drop:
            self.counters.lines_stored += batch.lines
        if batch.end_offset is not None:
            self._committed = batch.end_offset

    @property
    def taking(self) -> bool:
        return True

    @property
    def has_room(self) -> bool:
        return self.room

    @property
    def ready(self) -> bool:
        return True

    @property
    def committed(self) -> int | None:
        if self.durable and self._committed is None:
            return 0
        return self._committed

    @property
    def queued(self) -> int:
        return 0

    @property
    def alive(self) -> bool:
        return True

    def raise_if_failed(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def release(self) -> None:
        self.events.append("release")

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    @property
    def rows(self) -> list[bytes]:
        return [row for b in self.batches for row in b.rows]

    @property
    def rejections(self) -> list[Rejection]:
        return [r for b in self.batches for r in b.rejections]


def run(
    chunks: list[bytes],
    *,
    durable: bool = False,
    at_seal: list[bytes] | None = None,
    sink: MemorySink | None = None,
    **config: object,
) -> tuple[Collector, ScriptedSource, MemorySink]:
    """Run a collector over the chunks until the source asks it to stop; return it with its source and sink."""
    stop = StopRequest()
    source = ScriptedSource(chunks, stop, durable=durable, at_seal=at_seal or [])
    sink = sink or MemorySink(durable=durable)
    collector = Collector(CollectorConfig(fifo="unused", dsn="", **config), source, sink, stop)  # type: ignore[arg-type]
    assert collector.run() == EXIT_OK
    return collector, source, sink


class TestLines:
    def test_lines_across_chunks_land_in_order(self):
        """Lines cut anywhere between reads come out whole, each once, in the order written."""
        stream = b"".join(line(k) for k in range(50))
        chunks = [stream[i : i + 97] for i in range(0, len(stream), 97)]
        collector, _, sink = run(chunks)
        assert seqs(sink.rows) == list(range(50))
        assert sink.rejections == []
        assert collector.lines_read == 50

    def test_bad_line_is_rejected_with_reason_and_neighbours_land(self):
        """A line that breaks the contract becomes a rejection with its reason; the lines around it land."""
        _, _, sink = run([line(1) + b"not json\n" + line(2)])
        assert seqs(sink.rows) == [1, 2]
        (rejected,) = sink.rejections
        assert rejected.raw == b"not json"
        assert rejected.length == 8
        assert rejected.digest == hashlib.sha256(b"not json").digest()
        assert "invalid JSON" in rejected.reason

    def test_unfinished_last_line_is_rejected_at_stop(self):
        """Without a journal, a last line with no newline is rejected when the collector stops, not lost."""
        collector, _, sink = run([line(1) + b'{"time": "cut'])
        assert seqs(sink.rows) == [1]
        (rejected,) = sink.rejections
        assert rejected.raw == b'{"time": "cut'
        assert "unfinished line" in rejected.reason
        assert collector.lines_read == 2

    def test_over_long_line_keeps_its_length(self):
        """A line above --max-line-bytes is rejected with its full length and only its first bytes."""
        long_line = b"x" * 5000 + b"\n"
        _, _, sink = run([long_line[:3000], long_line[3000:] + line(7)], max_line_bytes=1000)
        assert seqs(sink.rows) == [7]
        (rejected,) = sink.rejections
        assert rejected.length == 5000
        assert len(rejected.raw) <= 5000
        assert "exceeds --max-line-bytes 1000" in rejected.reason


class TestBatchLimits:
    def test_rows_and_rejections_count_together(self):
        """Every batch holds at most --batch-rows lines, good and rejected ones counted alike."""
        stream = b"".join(line(k) if k % 2 else b"garbage %d\n" % k for k in range(40))
        _, _, sink = run([stream[i : i + 200] for i in range(0, len(stream), 200)], batch_rows=4)
        assert all(len(b) <= 4 + 2 for b in sink.batches)  # a batch is cut between reads: one read may overshoot
        assert sum(len(b) for b in sink.batches) == 40
        assert seqs(sink.rows) == list(range(1, 40, 2))

    def test_rejected_bytes_count_toward_the_byte_limit(self):
        """A flood of large garbage lines is cut into batches by bytes: rejections are not free."""
        garbage = b"g" * 20_000 + b"\n"
        _, _, sink = run([garbage] * 30, batch_bytes=50_000)
        assert len(sink.rejections) == 30
        assert len(sink.batches) >= 10
        assert all(b.size < 50_000 + 2 * len(garbage) for b in sink.batches)

    def test_each_line_is_held_once(self):
        """A batch holds each good line as its COPY row only, never the raw line beside it."""
        _, _, sink = run([line(1) + line(2)])
        (batch,) = sink.batches
        assert not hasattr(batch, "raws")
        assert batch.size == sum(len(r) + ITEM_OVERHEAD_BYTES for r in batch.rows)

    def test_full_batch_waits_while_the_sink_has_no_room_with_a_journal(self):
        """With a durable source, a sink with no room pauses parsing instead of blocking the reader."""
        sink = MemorySink(durable=True, room=False)
        stop = StopRequest()
        source = ScriptedSource([line(k) for k in range(10)], stop, durable=True)
        collector = Collector(CollectorConfig(fifo="unused", dsn="", batch_rows=2), source, sink, stop)
        for _ in range(5):
            collector._step()
        assert sink.batches == []
        assert source.backlog > 0  # bytes wait in the (journaled) source, not in memory
        assert len(collector.batch) == 2


class TestOffsets:
    def test_batches_cover_the_stream_without_gap(self):
        """With a journal, each batch runs from the previous batch's end to just past its last whole line."""
        stream = b"".join(line(k) for k in range(30))
        chunks = [stream[i : i + 300] for i in range(0, len(stream), 300)]
        _, source, sink = run(chunks, durable=True, batch_rows=7)
        assert source.events[0] == "start_at 0"
        assert sink.batches[0].start_offset == 0
        for before, after in zip(sink.batches, sink.batches[1:], strict=False):
            assert after.start_offset == before.end_offset
        assert sink.batches[-1].end_offset == len(stream)
        assert seqs(sink.rows) == list(range(30))

    def test_unfinished_line_stays_in_the_journal(self):
        """With a journal, an unfinished last line is neither rejected nor committed: the next start replays it."""
        whole = line(1)
        _, source, sink = run([whole + b'{"time"'], durable=True)
        assert sink.rejections == []
        assert sink.batches[-1].end_offset == len(whole)
        assert f"committed {len(whole)}" in source.events


class TestStopping:
    def test_seal_before_the_last_batches_and_close_after(self):
        """At stop the source is sealed first, what it held then is loaded, and only then the sink is closed."""
        _, source, sink = run([line(1)], at_seal=[line(2) + line(3)])
        assert seqs(sink.rows) == [1, 2, 3]
        assert source.events.index("seal") < source.events.index("close")
        assert sink.events == ["close"]

    def test_durable_source_releases_the_sink(self):
        """With a journal, the sink is told it may give up on an absent database once the pipe is sealed."""
        _, _, sink = run([line(1)], durable=True)
        assert sink.events == ["release", "close"]

    def test_sink_failure_stops_the_loop_and_aborts(self):
        """A sink that failed makes run() raise its error; the sink is aborted and the source closed."""
        sink = MemorySink(fail_with=RuntimeError("database writer stopped"))
        with pytest.raises(RuntimeError, match="database writer stopped"):
            run([line(1)], sink=sink)
        assert sink.events == ["abort"]

    def test_refusal_exits_3_naming_the_lines_not_stored(self, caplog):
        """A sink that refuses the data stops the collector with status 3 and one error line counting the lines."""
        stop = StopRequest()
        sink = MemorySink(fail_with=SinkRefused("the database refuses the collector's writes: permission denied"))
        source = ScriptedSource([line(1) + line(2)], stop)
        collector = Collector(CollectorConfig(fifo="unused", dsn=""), source, sink, stop)
        sink_fail, sink.fail_with = sink.fail_with, None
        collector._step()  # two lines read into the batch, not submitted yet
        sink.fail_with = sink_fail
        with caplog.at_level("ERROR"):
            assert collector.run() == EXIT_REFUSED
        (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
        assert "permission denied; 2 lines read were not stored" in record.getMessage()
        assert sink.events == ["abort"]

    def test_lines_not_stored_at_stop_exit_4(self, caplog):
        """Without a journal, a stop that leaves lines read but not stored exits 4 and says how many."""
        sink = MemorySink(drop=True)
        stop = StopRequest()
        collector = Collector(
            CollectorConfig(fifo="unused", dsn=""), ScriptedSource([line(1) + line(2)], stop), sink, stop
        )
        with caplog.at_level("ERROR"):
            assert collector.run() == EXIT_UNSTORED
        assert "2 lines read were not stored" in caplog.text

    def test_second_request_insists(self):
        """A first stop request asks for a clean stop; a second one insists."""
        stop = StopRequest()
        assert not stop.requested
        stop.request()
        assert stop.requested
        assert not stop.insistent
        stop.request()
        assert stop.insistent


class TestCopyText:
    @given(st.text(min_size=1).filter(lambda t: "\x00" not in t))
    @settings(max_examples=300)
    def test_row_rebuilds_the_event(self, text):
        """A row rebuilt into a line parses back to the same row: the one copy held is enough to reject it."""
        raw = orjson.dumps({**GOOD, "file_path": text, "data": {"k": text}})
        row, rejections = parse_line(raw)
        assert rejections == []
        assert row is not None
        assert parse_line(row_as_event(row))[0] == row

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            (b"\\N", None),
            (b"a\\tb", b"a\tb"),
            (b"\\\\", b"\\"),
            (b"\\101\\x42", b"AB"),
            (b"\\n\\r", b"\n\r"),
        ],
    )
    def test_decodes_copy_escapes(self, text, value):
        """Every backslash sequence of COPY's text format decodes to the byte PostgreSQL would store."""
        assert decode_field(text) == value

    @given(st.lists(st.binary(min_size=1, max_size=50), max_size=30), st.integers(min_value=1, max_value=200))
    def test_row_stream_hands_out_every_row_once(self, rows, size):
        """COPY reads the rows in pieces of at most size bytes (or one row) and gets all of them, in order."""
        stream, pieces = RowStream(rows), []
        while piece := stream.read(size):
            pieces.append(piece)
        assert b"".join(pieces) == b"".join(rows)

    @given(st.lists(st.binary(min_size=1, max_size=50), max_size=40), st.integers(min_value=-1, max_value=300))
    def test_row_stream_pieces_are_the_greedy_cut(self, rows, size):
        """Each piece is the most whole rows that fit in size (at least one row; all of them for size -1)."""
        stream, index = RowStream(rows), 0
        while piece := stream.read(size):
            taken = _greedy_rows(rows, index, size)
            assert piece == b"".join(rows[index : index + taken])
            index += taken
        assert index == len(rows)

    @given(
        st.lists(st.lists(st.binary(min_size=1, max_size=40), max_size=8), max_size=12),
        st.integers(min_value=-1, max_value=200),
        st.integers(min_value=0, max_value=100),
    )
    def test_row_stream_cuts_a_batch_at_its_reads(self, reads, size, cut_min_bytes):
        """With a batch's cuts, a piece is the most whole reads within size, or whole rows of one larger read."""
        batch = Batch(cut_min_bytes=cut_min_bytes)
        for rows in reads:
            batch.add_rows(list(rows))
        assert batch.cuts == [(end, len(b"".join(batch.rows[:end]))) for end, _ in batch.cuts]
        offsets = [0, *(length for _, length in batch.cuts)]
        assert all(offsets[i + 1] - offsets[i] >= cut_min_bytes for i in range(len(batch.cuts) - 1))  # but the last
        assert not batch.rows or batch.cuts[-1][0] == len(batch.rows)
        bounds = {end for end, _ in batch.cuts}
        stream, index, pieces = RowStream(batch.rows, batch.cuts), 0, []
        while piece := stream.read(size):
            taken = 1
            while len(b"".join(batch.rows[index : index + taken])) < len(piece):
                taken += 1
            assert piece == b"".join(batch.rows[index : index + taken])  # whole rows, in order
            assert size < 0 or len(piece) <= size or taken == 1
            if index + taken in bounds and index + taken < len(batch.rows) and size >= 0:
                following = min(end for end in bounds if end > index + taken)
                assert len(b"".join(batch.rows[index:following])) > size  # the next read did not fit
            index += taken
            pieces.append(piece)
        assert b"".join(pieces) == b"".join(batch.rows)
        assert index == len(batch.rows)

    def test_a_trickle_of_reads_keeps_few_cuts(self):
        """One-line reads add a cut only every CUT_MIN_BYTES of rows, so the cuts stay few whatever the reads."""
        batch = Batch()
        for _ in range(10_000):
            batch.add_rows([b"x" * 99 + b"\n"])
        assert len(batch.cuts) <= 10_000 * 100 // CUT_MIN_BYTES + 1
        assert batch.cuts[-1] == (10_000, 1_000_000)

    def test_row_stream_hands_out_rows_past_the_last_cut(self):
        """Rows added after the last cut still come out (one more cut at the end), in order."""
        rows = [b"a\n", b"bb\n", b"ccc\n", b"dddd\n"]
        for cuts in ([], [(2, 5)]):
            stream, pieces = RowStream(rows, cuts), []
            while piece := stream.read(7):
                pieces.append(piece)
            assert b"".join(pieces) == b"".join(rows)
            assert all(len(p) <= 7 for p in pieces)

    def test_row_stream_over_a_full_batch(self):
        """10,000 rows read in COPY_READ_BYTES pieces come out whole, in order, each piece within the size."""
        rows = [b"%d\t" % i + b"x" * (i % 700) + b"\n" for i in range(10_000)]
        batch = Batch()
        for first in range(0, len(rows), 150):  # a read's worth of rows at a time, as the collector adds them
            batch.add_rows(rows[first : first + 150])
        for stream in (RowStream(rows), RowStream(batch.rows, batch.cuts)):
            self._assert_whole_pieces(stream, rows)

    @staticmethod
    def _assert_whole_pieces(stream: RowStream, rows: list[bytes]) -> None:
        pieces = []
        while piece := stream.read(COPY_READ_BYTES):
            pieces.append(piece)
        assert b"".join(pieces) == b"".join(rows)
        assert all(len(p) <= COPY_READ_BYTES and p.endswith(b"\n") for p in pieces)
        assert len(pieces) > 1


def _greedy_rows(rows: list[bytes], start: int, size: int) -> int:
    """How many rows from start the old row-by-row loop took for one read of size bytes (the reference)."""
    taken = total = 0
    for row in rows[start:]:
        if taken and 0 <= size < total + len(row):
            break
        taken += 1
        total += len(row)
    return taken


class TestModel:
    def test_rejection_keeps_a_prefix_and_the_whole_lines_hash(self):
        """A rejection keeps at most keep_bytes of the line, plus its full length and SHA-256."""
        rejected = Rejection.of("bad", b"abcdef", keep_bytes=2)
        assert (rejected.raw, rejected.length, rejected.digest) == (b"ab", 6, hashlib.sha256(b"abcdef").digest())

    def test_batch_is_full_at_either_limit(self):
        """A batch is full at the item limit or at the byte limit, whichever comes first."""
        batch = Batch()
        batch.add_rejection(Rejection.of("bad", b"x" * 100))
        assert batch.full(BatchLimits(items=1, size=10**6))
        assert batch.full(BatchLimits(items=10, size=100))
        assert not batch.full(BatchLimits(items=10, size=10**6))


class TestBackoff:
    def test_doubles_up_to_the_cap_and_resets(self):
        """Delays double from the first one up to the maximum; a reset starts over."""
        backoff = Backoff(first=0.1, maximum=0.5)
        assert [backoff.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
        backoff.reset()
        assert backoff.next_delay() == 0.1

    def test_wait_gives_up_at_once(self):
        """A wait ends at the next poll when its give-up test turns true, and says so."""
        slept: list[float] = []
        assert Backoff(first=5, maximum=5).wait(give_up=lambda: bool(slept), sleep=slept.append) is False
        assert len(slept) == 1

    def test_saturated_once_at_the_cap(self):
        """The backoff says it is saturated once its delays reached the maximum, and no longer after a reset."""
        backoff = Backoff(first=1, maximum=4)
        seen = []
        for _ in range(4):
            seen.append(backoff.saturated)
            backoff.next_delay()
        assert seen == [False, False, True, True]
        backoff.reset()
        assert not backoff.saturated
