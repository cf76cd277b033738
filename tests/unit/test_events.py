"""The event factory: exact line sizes, the event contract, bookkeeping and reproducibility; size parsing."""

from __future__ import annotations

import ipaddress
import itertools
import re
import time
import uuid
from datetime import datetime

import orjson
import pytest

from reference.collector.validate import parse_event
from reference.events import BOOKKEEPING_KEY, EventFactory
from reference.fifo import DEFAULT_PIPE_CAPACITY, PIPE_BUF
from reference.sizes import (
    MAX_LINE_BYTES,
    MAX_RUN_ID_LENGTH,
    MAX_SOURCE_LENGTH,
    MIN_LINE_BYTES,
    SIZE_CLASSES,
    SizeRange,
    parse_size,
)

CONTRACT_FIELDS = {
    "time",
    "application_name",
    "environment_name",
    "log_event",
    "trace_id",
    "file_path",
    "host_ip",
    "data",
}
TEXT_FIELDS = ("application_name", "environment_name", "log_event", "trace_id", "file_path", "host_ip")
RFC3339_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Lines checked per size class: thousands where lines are cheap, fewer where each one is up to 1 MiB.
LINES_PER_CLASS = {"small": 3000, "medium": 3000, "pipe_buf": 3000, "over_pipe_buf": 200, "over_capacity": 30}
RUN = "run1"
SOURCE = "w0"


def factory(size: str | SizeRange = "small", *, seed: int = 0, run_id: str = RUN, source: str = SOURCE) -> EventFactory:
    """A factory for the size class or range, seed, run and source."""
    if isinstance(size, str):
        size = parse_size(size)
    return EventFactory(size, seed=seed, run_id=run_id, source=source)


def without_time(line: bytes) -> dict:
    """The decoded event minus its time stamp, the only value that depends on the clock."""
    event = orjson.loads(line)
    del event["time"]
    return event


class TestSizes:
    @pytest.mark.parametrize("name", list(SIZE_CLASSES))
    def test_class_bounds(self, name):
        """Every line of a size class is within the class's bounds, newline included."""
        size = SIZE_CLASSES[name]
        lengths = [len(line) for line in factory(name).lines(LINES_PER_CLASS[name])]
        assert size.low <= min(lengths)
        assert max(lengths) <= size.high

    def test_classes_tile_the_pipe_limits(self):
        """The classes rise without overlap from MIN_LINE_BYTES, meeting at PIPE_BUF and the pipe capacity."""
        assert list(SIZE_CLASSES) == ["small", "medium", "pipe_buf", "over_pipe_buf", "over_capacity"]
        ranges = list(SIZE_CLASSES.values())
        assert all(r.low <= r.high for r in ranges)
        assert all(a.high < b.low for a, b in itertools.pairwise(ranges))
        assert SIZE_CLASSES["small"].low == MIN_LINE_BYTES
        assert (SIZE_CLASSES["pipe_buf"].low, SIZE_CLASSES["pipe_buf"].high) == (PIPE_BUF, PIPE_BUF)
        assert (SIZE_CLASSES["over_pipe_buf"].low, SIZE_CLASSES["over_pipe_buf"].high) == (
            PIPE_BUF + 1,
            DEFAULT_PIPE_CAPACITY,
        )
        assert (SIZE_CLASSES["over_capacity"].low, SIZE_CLASSES["over_capacity"].high) == (
            DEFAULT_PIPE_CAPACITY + 1,
            MAX_LINE_BYTES,
        )

    def test_pipe_buf_lines_are_exactly_pipe_buf(self):
        """A pipe_buf line is exactly 4096 bytes."""
        lengths = {len(line) for line in factory("pipe_buf").lines(3000)}
        assert lengths == {4096}

    @pytest.mark.parametrize(
        "text",
        [
            "500-900",
            "777-777",
            f"{MIN_LINE_BYTES}-{MIN_LINE_BYTES}",
            f"{MIN_LINE_BYTES}-{MIN_LINE_BYTES + 1}",
            "2000-3000",
        ],
    )
    def test_explicit_range(self, text):
        """An explicit MIN-MAX range bounds every line."""
        size = parse_size(text)
        lengths = [len(line) for line in factory(size).lines(2000)]
        assert size.low <= min(lengths)
        assert max(lengths) <= size.high

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_minimum_fits_the_longest_ids(self, seed):
        """A MIN_LINE_BYTES line fits a run id and a source of the maximum length and a 12-digit seq."""
        f = factory(
            f"{MIN_LINE_BYTES}-{MIN_LINE_BYTES}",
            seed=seed,
            run_id="r" * MAX_RUN_ID_LENGTH,
            source="s" * MAX_SOURCE_LENGTH,
        )
        f.seq = 10**12 - 3
        lines = f.lines(500)
        assert {len(line) for line in lines} == {MIN_LINE_BYTES}
        assert orjson.loads(lines[-1])["data"][BOOKKEEPING_KEY]["seq"] == 10**12 - 3 + 500

    @pytest.mark.parametrize("size", ["small", "pipe_buf", f"{MIN_LINE_BYTES + 20}-{MIN_LINE_BYTES + 20}"])
    def test_seq_growing_to_twelve_digits_keeps_the_size(self, size):
        """A seq that grows from 11 to 12 digits leaves every line within bounds."""
        f = factory(size)
        bounds = parse_size(size)
        before = f.lines(50)
        f.seq = 10**11 - 5
        after = f.lines(50)
        assert all(bounds.low <= len(line) <= bounds.high for line in before + after)
        seqs = [orjson.loads(line)["data"][BOOKKEEPING_KEY]["seq"] for line in after]
        assert seqs == list(range(10**11 - 4, 10**11 + 46))
        if bounds.low == bounds.high:
            assert {len(line) for line in before + after} == {bounds.low}


class TestContract:
    @pytest.mark.parametrize("name", list(SIZE_CLASSES))
    def test_one_json_object_per_line(self, name):
        """A line is one JSON object ending in exactly one newline, with no other newline inside."""
        for line in factory(name).lines(min(LINES_PER_CLASS[name], 500)):
            assert line.endswith(b"\n")
            assert line.count(b"\n") == 1
            assert isinstance(orjson.loads(line), dict)

    @pytest.mark.parametrize("name", ["small", "medium", "pipe_buf"])
    def test_fields(self, name):
        """A line has exactly the eight contract fields with well-formed values."""
        started = time.time()
        for line in factory(name).lines(1000):
            event = orjson.loads(line)
            assert set(event) == CONTRACT_FIELDS
            assert RFC3339_WITH_OFFSET.fullmatch(event["time"])
            when = datetime.fromisoformat(event["time"])
            assert when.utcoffset() is not None
            assert abs(when.timestamp() - started) < 60
            for field in TEXT_FIELDS:
                assert isinstance(event[field], str)
                assert event[field]
            assert UUID4.fullmatch(event["trace_id"])
            assert uuid.UUID(event["trace_id"]).version == 4
            assert isinstance(ipaddress.ip_address(event["host_ip"]), ipaddress.IPv4Address)
            assert isinstance(event["data"], dict)

    @pytest.mark.parametrize("name", ["small", "medium", "pipe_buf"])
    def test_lines_pass_the_collector(self, name):
        """The reference collector accepts every line the factory makes."""
        for line in factory(name).lines(500):
            row = parse_event(line[:-1])
            assert row.count(b"\t") == 7

    def test_bookkeeping(self):
        """data._np carries the run id, the source and the seq."""
        lines = factory(run_id="runX", source="src-7").lines(3)
        bookkeeping = [orjson.loads(line)["data"][BOOKKEEPING_KEY] for line in lines]
        assert [{k: np[k] for k in ("run", "src", "seq")} for np in bookkeeping] == [
            {"run": "runX", "src": "src-7", "seq": 1},
            {"run": "runX", "src": "src-7", "seq": 2},
            {"run": "runX", "src": "src-7", "seq": 3},
        ]

    def test_seq_counts_per_factory(self):
        """Each factory counts its own seq from 1, whatever another factory has made."""
        first, second = factory(source="a"), factory(source="b")
        first.lines(10)
        seqs = [orjson.loads(line)["data"][BOOKKEEPING_KEY]["seq"] for line in second.lines(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert first.seq == 10
        assert orjson.loads(first.line())["data"][BOOKKEEPING_KEY]["seq"] == 11

    def test_login_errors_carry_a_traceback(self):
        """A login_error event of a class large enough to keep its data carries data.traceback."""
        events = [orjson.loads(line) for line in factory("medium").lines(2000)]
        errors = [e for e in events if e["log_event"] == "login_error"]
        assert len(errors) > 10
        for event in errors:
            assert event["data"]["traceback"].startswith("Traceback (most recent call last):\n")


class TestReproducibility:
    @pytest.mark.parametrize("name", ["small", "medium", "over_pipe_buf"])
    def test_same_seed_same_lines(self, name):
        """The same seed, run and source give the same lines, apart from the time stamp."""
        count = 300 if name != "over_pipe_buf" else 50
        first = [without_time(line) for line in factory(name, seed=1).lines(count)]
        second = [without_time(line) for line in factory(name, seed=1).lines(count)]
        assert first == second

    def test_same_seed_same_bytes_apart_from_time(self):
        """Two lines with the same seed differ only in the bytes of the time value."""
        first = factory(seed=2).lines(100)
        second = factory(seed=2).lines(100)
        pattern = re.compile(rb'"time":"[^"]*"')
        assert [pattern.sub(b"", line) for line in first] == [pattern.sub(b"", line) for line in second]

    def test_different_seeds_differ(self):
        """Different seeds give different lines."""
        first = [without_time(line) for line in factory(seed=1).lines(200)]
        second = [without_time(line) for line in factory(seed=2).lines(200)]
        differing = sum(a != b for a, b in zip(first, second, strict=True))
        assert differing > 190

    def test_different_sources_differ(self):
        """Two sources of the same seed do not send the same trace ids."""
        first = {orjson.loads(line)["trace_id"] for line in factory(seed=1, source="a").lines(200)}
        second = {orjson.loads(line)["trace_id"] for line in factory(seed=1, source="b").lines(200)}
        assert len(first) == 200
        assert not first & second


class TestParseSize:
    @pytest.mark.parametrize("name", list(SIZE_CLASSES))
    def test_class_names(self, name):
        """A class name, in any case and with - for _, gives that class."""
        assert parse_size(name) is SIZE_CLASSES[name]
        assert parse_size(f" {name.upper().replace('_', '-')} ") is SIZE_CLASSES[name]

    def test_explicit(self):
        """MIN-MAX gives a range with those bounds, named after them."""
        size = parse_size(" 500 - 900 ")
        assert (size.low, size.high, str(size)) == (500, 900, "500-900")

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("huge", r"neither a class \(small, medium, pipe_buf, over_pipe_buf, over_capacity\) nor MIN-MAX"),
            ("500", "such as 500-900"),
            ("900-500", "MIN 900 is larger than MAX 500; write it as 500-900"),
            (f"{MIN_LINE_BYTES - 1}-900", f"needs at least {MIN_LINE_BYTES} bytes; raise MIN"),
            (f"500-{MAX_LINE_BYTES + 1}", f"above {MAX_LINE_BYTES} bytes are not supported; lower MAX"),
        ],
    )
    def test_errors_say_what_to_do(self, text, says):
        """A size that cannot be used raises ValueError naming the input and the fix."""
        with pytest.raises(ValueError, match=says) as info:
            parse_size(text)
        assert repr(text) in str(info.value)

    @pytest.mark.parametrize("text", [f"{MIN_LINE_BYTES}-{MIN_LINE_BYTES}", f"{MAX_LINE_BYTES}-{MAX_LINE_BYTES}"])
    def test_limits_are_inclusive(self, text):
        """MIN_LINE_BYTES and MAX_LINE_BYTES themselves are accepted."""
        low, high = map(int, text.split("-"))
        assert (parse_size(text).low, parse_size(text).high) == (low, high)


class TestFactoryArguments:
    @pytest.mark.parametrize(
        ("run_id", "source"),
        [
            ("r" * (MAX_RUN_ID_LENGTH + 1), "w0"),
            ("run", "s" * (MAX_SOURCE_LENGTH + 1)),
            ("", "w0"),
            ("run", ""),
        ],
    )
    def test_bad_ids(self, run_id, source):
        """A run id or source that is empty or too long raises ValueError saying to shorten it."""
        with pytest.raises(ValueError, match="characters; shorten them"):
            factory(run_id=run_id, source=source)

    def test_longest_ids_are_accepted(self):
        """A run id and source of exactly the maximum length are accepted and stored."""
        line = factory(run_id="r" * MAX_RUN_ID_LENGTH, source="s" * MAX_SOURCE_LENGTH).line()
        np = orjson.loads(line)["data"][BOOKKEEPING_KEY]
        assert (np["run"], np["src"], np["seq"]) == ("r" * MAX_RUN_ID_LENGTH, "s" * MAX_SOURCE_LENGTH, 1)
