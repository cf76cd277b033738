"""parse_lines, the collector's whole-read path, gives exactly what parse_line gives line by line."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Line, Style, encode, json_values, keys, lines, stamps, texts

from reference.collector.validate import _STAMP_LINES, _stamps_plain, parse_block, parse_line, parse_lines
from reference.contract import COLUMNS

SOME = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_by_one(raws: list[bytes]) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """What the lines give judged one at a time: their rows, and their rejections as (reason, raw)."""
    rows, rejections = [], []
    for raw in raws:
        row, rejected = parse_line(raw)
        if row is not None:
            rows.append(row)
        rejections += [(r.reason, r.raw) for r in rejected]
    return rows, rejections


def at_once(raws: list[bytes]) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """What parse_lines gives for the same lines, in the same form; parse_block on them joined must agree."""
    rows, rejections = parse_lines(raws)
    if raws and not any(b"\n" in raw for raw in raws):
        assert parse_block(b"\n".join(raws), len(raws)) == (rows, rejections)
    return rows, [(r.reason, r.raw) for r in rejections]


@st.composite
def canonical_lines(draw: st.DrawFn) -> bytes:
    """A valid line as the emitter writes it: the contract's key order, no spaces, UTF-8 unescaped."""
    event = {name: draw(texts) for name in COLUMNS[1:7]}
    event = {
        "time": draw(stamps()),
        **event,
        "data": draw(st.one_of(st.none(), st.dictionaries(keys, json_values(8), max_size=4))),
    }
    return encode(event, Style(",", ":", ascii_only=False)).encode()


@st.composite
def mutated(draw: st.DrawFn, line: bytes) -> bytes:
    """line with one byte changed, removed or inserted, or cut short, or a key repeated."""
    spot = draw(st.integers(0, len(line) - 1))
    how = draw(st.sampled_from(["change", "remove", "insert", "cut", "repeat"]))
    if how == "change":
        return line[:spot] + bytes([draw(st.integers(0, 255))]) + line[spot + 1 :]
    if how == "remove":
        return line[:spot] + line[spot + 1 :]
    if how == "insert":
        return line[:spot] + draw(st.sampled_from([b" ", b"\\", b'"', b",", b"}", b"\r", b"\xff", b"\t"])) + line[spot:]
    if how == "cut":
        return line[:spot]
    return line[:-1] + b',"host_ip":"x"}'


@st.composite
def reads(draw: st.DrawFn) -> list[bytes]:
    """A read's lines: mostly canonical ones, some of any other valid style, some broken."""
    good = draw(st.lists(canonical_lines(), min_size=1, max_size=12))
    kind = draw(st.sampled_from(["canonical", "styled", "broken"]))
    if kind == "styled":
        line: Line = draw(lines())
        good.insert(draw(st.integers(0, len(good))), line.raw)
    elif kind == "broken":
        good.insert(draw(st.integers(0, len(good))), draw(mutated(draw(st.sampled_from(good)))))
    return good


@st.composite
def stamp_reads(draw: st.DrawFn) -> list[str]:
    """A read's stamps: one layout with its digits redrawn (years 0000-0009 and 9999 too), now and then another."""
    base = draw(stamps())
    digits = st.sampled_from("0123456789")
    read = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 5)) == 0:
            read.append(draw(stamps()))
        else:
            read.append("".join(draw(digits) if c.isdigit() and draw(st.booleans()) else c for c in base))
    return read


class TestStampLayouts:
    """The shortcut for stamps sharing a layout judges a read's stamps as the regex does."""

    @SOME
    @given(stamp_reads())
    def test_same_as_the_regex(self, read: list[str]):
        """Any mix of layouts and digits: the same verdict as _STAMP_LINES on the whole read."""
        times = "\n".join(read)
        assert _stamps_plain(times.encode(), len(read)) == (_STAMP_LINES.fullmatch(times) is not None)

    def test_the_layouts_edges(self):
        """Years the layout does not fix (0000, 0001, 9999) and offset hours past 15 are refused as the regex does."""
        good = "2026-11-28T05:30:00.123456+05:00"
        for other in (
            "0000-11-28T05:30:00.123456+05:00",
            "0001-11-28T05:30:00.123456+05:00",
            "9999-11-28T05:30:00.123456+05:00",
            "2026-11-28T05:30:00.123456+16:00",
        ):
            for read in ([good, other], [other, good], [good, good, other]):
                times = "\n".join(read)
                assert not _stamps_plain(times.encode(), len(read))
        assert _stamps_plain(f"{good}\n{good.replace('+05', '+15')}".encode(), 2)


class TestSameAsLineByLine:
    """A read judged at once gives the rows and rejections its lines give one by one."""

    @SOME
    @given(reads())
    def test_generated_reads(self, raws: list[bytes]):
        """Canonical, styled and broken lines mixed in one read."""
        assert at_once(raws) == one_by_one(raws)

    @SOME
    @given(st.lists(canonical_lines(), min_size=1, max_size=12))
    def test_canonical_reads(self, raws: list[bytes]):
        """Reads of canonical lines only (the fast path's own ground)."""
        assert at_once(raws) == one_by_one(raws)

    def test_lines_glued_across_the_joints(self):
        """Two events on one line and an event cut in two lines are not read as the two events they join into."""
        first = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":{"x":1}}'
        )
        raws = [first + b"," + first[:-9], first[-8:]]
        assert at_once(raws) == one_by_one(raws)
        assert at_once(raws)[0] == []

    def test_data_that_is_not_an_object(self):
        """data as an array, a string or a number is refused in a read of good lines, null lands as \\N."""
        base = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":'
        )
        raws = [base + b"{}}", base + b"null}", base + b"null}", base + b"[1]}", base + b'"x"}', base + b"1}"]
        assert at_once(raws) == one_by_one(raws)
        assert at_once(raws[:3])[0][1].endswith(b"\t\\N\n")

    def test_dates_that_do_not_exist(self):
        """April 31 and a leap second in a read of good lines take the exact path."""
        base = (
            b'","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":{}}'
        )
        raws = [
            b'{"time":"2026-04-30T05:30:00Z' + base,
            b'{"time":"2026-04-31T05:30:00Z' + base,
            b'{"time":"2016-12-31T23:59:60Z' + base,
            b'{"time":"0001-01-01T00:00:00+01:00' + base,
        ]
        assert at_once(raws) == one_by_one(raws)

    def test_whitespace_inside_data(self):
        """A tab, CR or space between data's tokens (legal JSON) is escaped in the row as line by line, never raw."""
        base = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":'
        )
        for space in (b"\t", b"\r", b" ", b"\t\r "):
            raws = [base + b"{" + space + b'"x":' + space + b"1" + space + b"}}", base + b"{}}"]
            assert at_once(raws) == one_by_one(raws)
            assert all(row.count(b"\t") == len(COLUMNS) - 1 for row in at_once(raws)[0])

    def test_empty_read(self):
        """No lines, nothing out."""
        assert parse_lines([]) == ([], [])
