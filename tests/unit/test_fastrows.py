"""The compiled parser (reference/collector/_fastrows.c): a row only where parse_line gives that row, else the line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Line, Style, deep_data, encode, json_values, keys, lines, stamps, texts

from loadtests.bench.independent import independent_lines
from loadtests.corpus import load_corpus
from reference.collector import validate
from reference.collector.validate import parse_line
from reference.contract import COLUMNS
from reference.events import EventFactory
from reference.sizes import SIZE_CLASSES

if validate.STALE:
    # An editable install keeps its compiled module when _fastrows.c changes: these tests would test the old one.
    raise RuntimeError(validate.STALE)
if validate.copy_rows is None:
    # CI installs a C compiler (.ci/run), so there a missing module means the build broke: fail, do not hide it.
    if os.environ.get("CI"):
        raise RuntimeError("reference/collector/_fastrows.c was not built (see pip's output: is a C compiler there?)")
    pytest.skip("the compiled fast path is not built (no C compiler at install)", allow_module_level=True)
copy_rows = validate.copy_rows

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLAIN = (
    b'{"time":"2026-11-28T05:30:00.123456+05:00","application_name":"a","environment_name":"e","log_event":"l",'
    b'"trace_id":"t","file_path":"f","host_ip":"h","data":{"x":[1,-2.5e-3,true,false,null,"s"],"":{}}}'
)


def judged(line: bytes) -> bytes | None:
    """The row the compiled path gives for line, or None when it hands the line back."""
    items, unjudged = copy_rows(line)
    assert len(items) == 1
    if unjudged:
        assert items == [line]
        return None
    return items[0]


def assert_agrees(line: bytes) -> bytes | None:
    """The compiled path gives parse_line's row without rejections, or hands the line back; the row or None."""
    row = judged(line)
    if row is not None:
        assert parse_line(line) == (row, []), line
    return row


@st.composite
def plain_lines(draw: st.DrawFn) -> bytes:
    """Lines as JSON encoders write them: any key order, spaces or none, non-ASCII raw or escaped (surrogate pairs
    too), numbers of any size, nested data; stamps with upper-case T and Z that PostgreSQL parses as written."""
    fields = {name: draw(texts) for name in COLUMNS[1:7]}
    stamp = draw(stamps(leap_seconds=False)).replace("t", "T").replace(" ", "T").replace("z", "Z")
    # What PostgreSQL parses as written: at most 6 fraction digits, offsets up to 15:59.
    stamp = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", stamp)
    stamp = re.sub(r"([+-])(1[6-9]|2[0-3]):", r"\g<1>15:", stamp)
    fields["time"] = stamp
    fields["data"] = draw(st.one_of(st.none(), st.dictionaries(keys, json_values(12), max_size=5)))
    event = {name: fields[name] for name in draw(st.permutations(COLUMNS))}
    style = Style(draw(st.sampled_from([",", ", "])), draw(st.sampled_from([":", ": "])), draw(st.booleans()))
    return encode(event, style).encode()


@st.composite
def damaged(draw: st.DrawFn, line: bytes) -> bytes:
    """line with bytes changed, removed, inserted or cut at random spots (any byte value, high bytes too)."""
    for _ in range(draw(st.integers(1, 3))):
        spot = draw(st.integers(0, len(line)))
        how = draw(st.sampled_from(["change", "remove", "insert", "cut", "digit"]))
        byte = bytes([draw(st.integers(0, 255))])
        if how == "change":
            line = line[:spot] + byte + line[spot + 1 :]
        elif how == "remove":
            line = line[:spot] + line[spot + 1 :]
        elif how == "insert":
            line = line[:spot] + byte + line[spot:]
        elif how == "cut":
            line = line[:spot]
        else:  # a digit for a digit: dates, offsets and numbers that stay well-shaped but may not be real
            digits = [i for i, b in enumerate(line) if 0x30 <= b <= 0x39]
            if digits:
                at = draw(st.sampled_from(digits))
                line = line[:at] + draw(st.sampled_from(b"0123456789")).to_bytes(1, "big") + line[at + 1 :]
    return line.replace(b"\n", b"")  # a newline ends a line: two lines are the read tests' matter


class TestPlainLines:
    """Lines in the encoder's shape are judged in C, with the row parse_line gives."""

    @MANY
    @given(plain_lines())
    def test_generated_plain_lines(self, line: bytes):
        """Every plane of Unicode, escapes, numbers of any size, nested data: judged in C, parse_line's row."""
        assert assert_agrees(line) is not None, line

    def test_the_projects_and_the_independent_lines_are_all_judged_in_c(self):
        """The data sets the benchmark measures never leave the compiled path."""
        project = EventFactory(SIZE_CLASSES["small"], seed=3, run_id="r", source="s").lines(2_000)
        independent = independent_lines(2_000, 3)
        for data_set in (project, independent):
            block = b"\n".join(line.rstrip(b"\n") for line in data_set)
            items, unjudged = copy_rows(block)
            assert unjudged == 0
            assert items == [parse_line(line.rstrip(b"\n"))[0] for line in data_set]

    def test_every_escape_in_a_text_and_in_data(self):
        """Texts are decoded then escaped for COPY; data keeps its escapes, backslashes doubled."""
        escapes = rb"q\"b\\s\/b\bf\fn\nr\rt\t\u00e9\ud83d\ude00\u005c\u0009\u000A\u0001"
        line = PLAIN.replace(b'"log_event":"l"', b'"log_event":"' + escapes + b'"')
        line = line.replace(b'"s"]', b'"' + escapes + b'"]')
        row = assert_agrees(line)
        assert row is not None
        assert 'q"b\\\\s/b\bf\fn\\nr\\rt\\té😀\\\\\\t\\n\x01'.encode() in row
        assert escapes.replace(b"\\", b"\\\\") in row

    def test_spaces_and_any_key_order(self):
        """Spaces between the tokens and the keys in any order give the row of the contract's column order."""
        line = (
            b'{ "data" : { "x" : [ 1 , 2 ] } , "host_ip" : "h" , "file_path": "f", "trace_id":"t", '
            b'"log_event":"l","environment_name":"e","application_name":"a","time":"2026-11-28T05:30:00Z" }'
        )
        assert assert_agrees(line) == b'2026-11-28T05:30:00Z\ta\te\tl\tt\tf\th\t{ "x" : [ 1 , 2 ] }\n'

    def test_null_data_is_copys_null(self):
        """data null lands as \\N, not as the text null."""
        line = PLAIN[: PLAIN.index(b'"data":') + 7] + b"null}"
        assert assert_agrees(line).endswith(b"\th\t\\N\n")


class TestEverythingElseIsHandedBack:
    """A line the compiled path does not fully understand goes to parse_line whole: never a different row."""

    @MANY
    @given(st.data())
    def test_damaged_lines(self, data: st.DataObject):
        """Random damage to plain lines: a row only where parse_line gives the same row and no rejection."""
        assert_agrees(data.draw(damaged(data.draw(plain_lines()))))

    @MANY
    @given(lines())
    def test_any_valid_style(self, line: Line):
        """Any key order and spacing, escapes, lower-case t and z, leap seconds: agreed or handed back."""
        assert_agrees(line.raw)

    @MANY
    @given(st.binary(max_size=300))
    def test_any_bytes(self, raw: bytes):
        """Arbitrary bytes (no newline, which ends a line) are never a row unless parse_line says so."""
        assert_agrees(raw.replace(b"\n", b""))

    @pytest.mark.parametrize(
        "stamp",
        [
            "2000-02-29T00:00:00Z",  # leap year (divisible by 400)
            "2024-02-29T23:59:59.999999-15:59",
            "1900-02-29T00:00:00Z",  # not a leap year (divisible by 100)
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2016-12-31T23:59:60Z",  # leap second: the contract rewrites it
            "2026-01-01T00:00:00.1234567Z",  # 7 digits: PostgreSQL rounds, the contract rewrites
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+16:00",
            "2026-01-01T00:00:00+15:60",
            "2026-01-01T00:00:00-00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00",
            "2026-01-01t00:00:00z",
            "2026-01-01 00:00:00Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "0002-01-01T00:00:00+15:00",
            "9998-12-31T23:59:59Z",
            "9999-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z ",
            "٢٠٢٦-01-01T00:00:00Z",  # other scripts' digits
        ],
    )
    def test_stamps_at_every_edge(self, stamp: str):
        """Each edge of the time rule: the compiled path agrees with parse_line or hands the line back."""
        line = PLAIN.replace(b"2026-11-28T05:30:00.123456+05:00", stamp.encode())
        assert_agrees(line)

    def test_only_stamps_postgresql_stores_as_written_are_judged(self):
        """Leap years and the widest plain offset are judged in C; what the contract rewrites is handed back."""
        for stamp, in_c in (
            (b"2000-02-29T00:00:00Z", True),
            (b"2024-02-29T23:59:59.999999-15:59", True),
            (b"0002-01-01T00:00:00+15:00", True),
            (b"2016-12-31T23:59:60Z", False),
            (b"0001-01-01T00:00:00Z", False),
            (b"2026-01-01T00:00:00.1234567Z", False),
        ):
            assert (judged(PLAIN.replace(b"2026-11-28T05:30:00.123456+05:00", stamp)) is not None) == in_c, stamp

    @pytest.mark.parametrize(
        "sequence",
        [
            b"\xc0\x80",  # overlong NUL
            b"\xc1\xbf",
            b"\xe0\x80\x80",  # overlong
            b"\xed\xa0\x80",  # a surrogate
            b"\xf4\x90\x80\x80",  # above U+10FFFF
            b"\xf5\x80\x80\x80",
            b"\xe2\x82",  # cut short
            b"\x80",
            b"\xff",
        ],
    )
    def test_bad_utf8_in_a_text_and_in_data(self, sequence: bytes):
        """Malformed UTF-8 anywhere is handed back (parse_line rejects it); good 4-byte UTF-8 is judged."""
        assert judged(PLAIN.replace(b'"log_event":"l"', b'"log_event":"l' + sequence + b'"')) is None
        assert judged(PLAIN.replace(b'"s"]', b'"s' + sequence + b'"]')) is None
        assert judged(PLAIN.replace(b'"s"]', b'"s\xf0\x9f\x98\x80"]')) is not None

    @pytest.mark.parametrize("depth", [2, 63, 64, 65, 66, 256, 257, 300])
    def test_nesting_at_and_past_every_limit(self, depth: int):
        """Deep data agrees with parse_line at every depth (the C bound is below the contract's)."""
        line = PLAIN[: PLAIN.index(b'"data":') + 7] + deep_data(depth).encode() + b"}"
        assert_agrees(line)

    @pytest.mark.parametrize(
        "data",
        [
            b"[1]",
            b'"x"',
            b"1",
            b"true",
            b"{",
            b'{"a":1,}',
            b'{"a" 1}',
            b'{"a":01}',
            b'{"a":1.}',
            b'{"a":-}',
            b'{"a":1e}',
            b'{"a":tru}',
            b'{"a":\t1}',
            b'{"a":\r1}',
            b'{"a":"\\u0000"}',
            b'{"a":"\x01"}',
            b'{"a":"\\ud800"}',
            b'{"a":"\\udc00"}',
            b'{"a":"\\ud800\\u0041"}',
            b'{"a":"\\x41"}',
            b'{"a":"\\u12"}',
        ],
    )
    def test_data_that_is_not_a_plain_object(self, data: bytes):
        """data not an object or null, not JSON, with a NUL or lone surrogate, or a tab or CR: handed back."""
        line = PLAIN[: PLAIN.index(b'"data":') + 7] + data + b"}"
        assert judged(line) is None
        assert_agrees(line)

    def test_repeated_keys_and_empty_texts_are_handed_back(self):
        """A repeated key (any field) and an empty text never pass the C shape."""
        assert judged(PLAIN[:-1] + b',"host_ip":"x"}') is None
        assert judged(PLAIN.replace(b'"host_ip":"h"', b'"host_ip":""')) is None
        assert judged(PLAIN.replace(b'{"time"', b'{"time":"x","time"')) is None

    def test_a_read_mixing_plain_and_other_lines_keeps_its_order(self):
        """parse_block over plain, broken and styled lines: the rows and rejections parse_line gives, in order."""
        read = [PLAIN, b"not json", PLAIN.replace(b"T05", b"t05"), b"", PLAIN + b"\r"]
        rows, rejections = validate.parse_block(b"\n".join(read))
        expected_rows, expected_rejections = [], []
        for line in read:
            row, rejected = parse_line(line)
            expected_rows += [row] if row is not None else []
            expected_rejections += rejected
        assert (rows, rejections) == (expected_rows, expected_rejections)
        assert len(rows) == 2


class TestCorpus:
    """Every hostile corpus kind is handed back to parse_line, except the one only PostgreSQL refuses."""

    def test_every_kind(self):
        """Each kind: parse_line's row or the line itself; only pg-rejected-number is a row (as in parse_line)."""
        for line in load_corpus():
            raw = line.raw.replace(b"\n", b"")
            row = assert_agrees(raw)
            assert (row is not None) == (line.kind == "pg-rejected-number"), line.kind


class TestOutOfMemory:
    """An allocation that fails anywhere inside copy_rows raises MemoryError (parse_block then goes line by line)."""

    def test_each_allocation_failing_in_turn(self):
        """Whichever allocation fails (the list, a row, a line handed back, the list's growth): MemoryError, no crash.

        _testcapi.set_nomemory makes the real allocator fail from the start-th allocation on, so the error paths
        (a row that cannot be made, PyList_Append failing, the result tuple) run for real; an ASan build
        (docs/testing.md) checks that they free and release everything.
        """
        testcapi = pytest.importorskip("_testcapi")
        block = b"\n".join([PLAIN, b"not json", PLAIN, b"", PLAIN.replace(b"T05", b"t05")] * 4)
        expected = copy_rows(block)
        failed = 0
        for start in range(120):
            for stop in (start + 1, 0):  # one allocation fails, or every one from there on
                testcapi.set_nomemory(start, stop)
                try:
                    got = copy_rows(block)
                except MemoryError:
                    failed += 1
                    continue
                finally:
                    testcapi.remove_mem_hooks()
                assert got == expected
        assert failed > 0  # the failures did reach copy_rows


class TestStaleBuild:
    """A compiled module older than _fastrows.c (an editable install not rebuilt) is not used, and says why."""

    def test_a_source_newer_than_the_module_turns_the_compiled_path_off(self, tmp_path: Path):
        """The package copied with its built module, the source touched after: COMPILED is False, STALE says why."""
        package = Path(validate.__file__).parents[1]
        shutil.copytree(package, tmp_path / "reference", ignore=shutil.ignore_patterns("__pycache__"))
        source = tmp_path / "reference" / "collector" / "_fastrows.c"
        built = next((tmp_path / "reference" / "collector").glob("_fastrows*.so"))
        os.utime(source, (built.stat().st_mtime + 10, built.stat().st_mtime + 10))
        probe = "from reference.collector import validate as v; print(v.__file__); print(v.COMPILED); print(v.STALE)"
        shown = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert shown[0] == str(tmp_path / "reference" / "collector" / "validate.py")
        assert shown[1] == "False"
        assert "_fastrows.c" in shown[2]
        assert "pip install" in shown[2]
        os.utime(source, (built.stat().st_mtime - 10, built.stat().st_mtime - 10))
        shown = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert shown[1:] == ["True", ""]
