"""parse_lines and parse_block, the whole-read path (in C when built), give exactly what parse_line gives."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Line, Style, encode, json_values, keys, lines, stamps, texts

from reference.collector import validate
from reference.collector.validate import parse_block, parse_line, parse_lines
from reference.contract import COLUMNS

# The path is chosen once per test, for all its examples: the fixture's scope is what is meant.
SOME = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser_path(request, monkeypatch):
    """Each test runs with the compiled parser (when built) and again without it, as an install without gcc."""
    if request.param == "python":
        monkeypatch.setattr(validate, "copy_rows", None)
    elif validate.copy_rows is None:
        pytest.skip("the compiled parser is not built (no C compiler at install)")
    return request.param


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
        assert parse_block(b"\n".join(raws)) == (rows, rejections)
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
        """Reads of canonical lines only (the compiled path's own ground)."""
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

    def test_a_line_holding_a_newline_is_judged_whole(self):
        """A line that ends with or holds a newline (none from the splitter does) is judged as parse_line judges it.

        It is never passed on as a row unjudged, nor judged as the two lines it would split into.
        """
        plain = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":{"x":1}}'
        )
        for raws in ([b"not json\n"], [plain + b"\n"], [plain + b"\n" + plain], [plain, b"\n", plain]):
            assert at_once(raws) == one_by_one(raws), raws
        assert at_once([b"not json\n"])[0] == []

    def test_empty_read(self):
        """No lines, nothing out."""
        assert parse_lines([]) == ([], [])
