"""Property-based tests of parse_line: generated valid lines land exactly, generated mutations are refused."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import Line, deep_data, encode, lines, stamps, styles

from reference.collector.validate import parse_line
from reference.contract import COLUMNS, MAX_NESTING, Invalid, check_time, check_time_text

# About 4,000 examples in all: under a minute on a 2-core machine shared with other work.
MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_COPY_LETTERS = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\"}


def fields_of(row: bytes) -> list[bytes | None]:
    """The eight values of a COPY text row, unescaped (the escapes the collector writes)."""
    assert row.endswith(b"\n")
    assert row.count(b"\n") == 1
    parts = row[:-1].split(b"\t")
    assert len(parts) == len(COLUMNS)
    return [None if p == b"\\N" else _COPY_ESCAPE.sub(lambda m: _COPY_LETTERS[m.group(1)], p) for p in parts]


def instant(text: str) -> datetime:
    """The instant of a stamp Python can read (no leap second; fraction cut to 6 digits, compared loosely)."""
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text.replace("t", "T").replace("z", "Z"))
    return datetime.fromisoformat(text)


def refused(raw: bytes) -> str:
    """The reason for a line parse_line refuses whole; fails the test otherwise."""
    row, rejections = parse_line(raw)
    assert row is None
    assert [r.raw for r in rejections] == [raw]
    assert rejections[0].reason
    assert not rejections[0].reason.startswith("internal error")
    return rejections[0].reason


class TestValidLinesLand:
    """Every generated valid line gives one row holding exactly its values."""

    @MANY
    @given(lines())
    def test_values_land_exactly(self, line: Line):
        """Texts land as decoded, data as the bytes written (jsonb parses them), time as the same instant."""
        row, rejections = parse_line(line.raw)
        assert rejections == []
        values = fields_of(row)
        assert values[1:7] == [line.fields[c].encode() for c in COLUMNS[1:7]]
        assert values[7] == (None if line.data_text is None else line.data_text.encode())
        stored, written = values[0].decode(), line.fields["time"]
        if stored == written:
            return
        # Rewritten: a leap second, an offset PostgreSQL refuses, or more than 6 fraction digits.
        assert stored.endswith("+00:00")
        if ":60" not in written[16:19]:
            assert abs((instant(stored) - instant(written)).total_seconds()) <= 1e-6

    @SOME
    @given(st.integers(2, MAX_NESTING), styles)
    def test_deep_but_legal_nesting(self, depth, style):
        """data nested up to the limit lands."""
        line = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":' + deep_data(depth).encode() + b"}"
        )
        assert parse_line(line)[1] == []

    def test_ten_thousand_keys(self):
        """A data object with 10,000 keys, the empty one among them, lands byte for byte."""
        data = "{" + ",".join(f'"k{i}":{i}' for i in range(9_999)) + ',"":0}'
        raw = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":' + data.encode() + b"}"
        )
        row, rejections = parse_line(raw)
        assert rejections == []
        assert fields_of(row)[7] == data.encode()


class TestMutationsAreRefused:
    """Every generated mutation of a valid line is refused with a reason; nothing raises."""

    @MANY
    @given(lines(max_leaves=10), st.data())
    def test_truncated(self, line: Line, data):
        """A line cut anywhere before its end is refused whole."""
        cut = data.draw(st.integers(1, len(line.raw) - 1))
        refused(line.raw[:cut])

    @MANY
    @given(lines(max_leaves=10), lines(max_leaves=10), st.data())
    def test_spliced(self, first: Line, second: Line, data):
        """A fragment of one line glued before another: the fragment is refused, the other line lands."""
        cut = data.draw(st.integers(1, len(first.raw) - 1))
        row, rejections = parse_line(first.raw[:cut] + second.raw)
        assert row == parse_line(second.raw)[0]
        assert [r.raw for r in rejections] == [first.raw[:cut]]
        assert rejections[0].reason.startswith(f"fragment of {cut} bytes glued before a valid event")

    @MANY
    @given(
        lines(max_leaves=10),
        st.sampled_from(COLUMNS),
        st.sampled_from(["", " ", "\t", "\r\n", "  "]),
        st.sampled_from(['"x"', "null", "1e5", "[]", '{"a":1}', '"2026-11-28T05:30:00Z"']),
        st.booleans(),
    )
    def test_repeated_key(self, line: Line, key, padding, value, before):
        """Any key again, with any padding and any value, before or after the first: refused naming the key.

        A repeat whose value has the wrong type may be named for that instead (the schema checks each value).
        """
        member = f'{padding}"{key}"{padding}:{padding}{value}{padding}'.encode()
        raw = b"{" + member + b"," + line.raw[1:] if before else line.raw[:-1] + b"," + member + b"}"
        why = refused(raw)
        assert why.startswith((f"key {key!r} appears twice", f"field {key!r}"))

    @SOME
    @given(st.integers(MAX_NESTING + 1, 3 * MAX_NESTING) | st.integers(1000, 20_000))
    def test_too_deep(self, depth):
        """Nesting past the limit, at any depth, is refused naming the depth."""
        raw = (
            b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
            b'"trace_id":"t","file_path":"f","host_ip":"h","data":' + deep_data(depth).encode() + b"}"
        )
        assert refused(raw).startswith(f"JSON nested {depth} levels deep")

    @MANY
    @given(
        lines(max_leaves=10),
        st.data(),
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x00"]),
    )
    def test_bad_byte_anywhere(self, line: Line, data, bad):
        """Invalid UTF-8 or a NUL byte at any position is refused (before the line it is a fragment, see spliced)."""
        at = data.draw(st.integers(1, len(line.raw)))
        refused(line.raw[:at] + bad + line.raw[at:])

    @MANY
    @given(lines(max_leaves=10), st.data())
    def test_escaped_nul_in_any_string(self, line: Line, data):
        """\\u0000 inside any string (a text, a key or a value in data) is refused."""
        quotes = [m.start() for m in re.finditer(rb'(?<!\\)"', line.raw)]
        at = data.draw(st.sampled_from(quotes[::2])) + 1  # just after an opening quote
        refused(line.raw[:at] + b"\\u0000" + line.raw[at:])

    @SOME
    @given(lines(max_leaves=10))
    def test_crlf_and_bom(self, line: Line):
        """A CR before the newline, or a BOM before the line, is refused."""
        assert "CRLF" in refused(line.raw + b"\r")
        assert "byte order mark" in refused(b"\xef\xbb\xbf" + line.raw)

    @MANY
    @given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
    def test_any_bytes(self, raw):
        """Whatever the bytes, parse_line answers with a row or reasons that cover the line; it never raises."""
        row, rejections = parse_line(raw)
        assert row is not None or rejections
        assert all(r.reason and not r.reason.startswith("internal error") for r in rejections)
        assert b"".join(r.raw for r in rejections) == raw[: len(b"".join(r.raw for r in rejections))]


class TestTimeParsers:
    """msgspec's C date-time parser and the RFC 3339 grammar agree on every stamp."""

    @staticmethod
    def judged(judge, value):
        try:
            return "ok", judge(value)
        except Invalid as exc:
            return "refused", str(exc)

    @MANY
    @given(
        stamps()
        | st.from_regex(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt _][0-9]{2}:[0-9]{2}(:[0-9]{2})?([.,][0-9]{0,8})?"
            r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?",
            fullmatch=True,
        )
        | st.text(max_size=40)
    )
    def test_fast_and_exact_paths_agree(self, text):
        """check_time (msgspec first) and check_time_text (the grammar alone) give the same verdict and text."""
        raw = msgspec.Raw(msgspec.json.encode(text))
        assert self.judged(check_time, raw) == self.judged(check_time_text, text)

    @pytest.mark.parametrize("style", ["T", "t", " "])
    def test_separators(self, style):
        """Each separator the grammar allows is accepted by both."""
        text = f"2026-11-28{style}05:30:00Z"
        assert check_time(msgspec.Raw(msgspec.json.encode(text))) == check_time_text(text) == text

    @SOME
    @given(stamps(leap_seconds=False))
    def test_stamps_keep_their_instant(self, text):
        """Whatever the form, the stored text denotes the same instant (to the microsecond)."""
        stored = check_time_text(text)
        assume(stored != text)
        assert abs((instant(stored) - instant(text)).total_seconds()) <= 1e-6


def test_encode_matches_generated_style_examples():
    """The generator's own encoder writes JSON that Python's parser reads back (a check of the test itself)."""
    import json

    from strategies import Number, Style

    assert json.loads(encode({"a": [Number("1e5"), None, "é"]}, Style(", ", ": ", True))) == {"a": [1e5, None, "é"]}
