"""Validating lines against the event contract and turning them into COPY text rows."""

from __future__ import annotations

import re

import orjson
import pytest
from strategies import GOOD_FIELDS

from reference.collector.validate import COLUMNS, TEXT_FIELDS, Invalid, Rejection, parse_event, parse_line

# COPY text format: backslash escapes (https://www.postgresql.org/docs/current/sql-copy.html, "Text Format").
_COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_COPY_LETTERS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _COPY_LETTERS.get(code, code)


def decode_row(row: bytes) -> list[str | None]:
    """The column values of one COPY text row, decoded the way PostgreSQL decodes them."""
    assert row.endswith(b"\n")
    assert row.count(b"\n") == 1, "a raw newline inside a row ends the row early"
    fields = row[:-1].decode("utf-8").split("\t")
    return [None if f == "\\N" else _COPY_ESCAPE.sub(_unescape, f) for f in fields]


def event(**changes: object) -> dict:
    """A valid event, with some fields replaced."""
    base = {
        **GOOD_FIELDS,
        "data": {"user": "Ann", "age": 33, "_np": {"run": "r1", "src": "w0", "seq": 1}},
    }
    base.update(changes)
    return base


def encode(value: object) -> bytes:
    """value as one JSON line without its newline."""
    return orjson.dumps(value)


def without(field: str) -> dict:
    """A valid event lacking one field."""
    e = event()
    del e[field]
    return e


def rejected(raw: bytes) -> str:
    """The reason parse_event gives for raw; fails the test if raw is accepted."""
    with pytest.raises(Invalid) as info:
        parse_event(raw)
    return str(info.value)


class TestRows:
    def test_valid_event(self):
        """A valid event becomes a COPY text row of the eight columns, tab separated, newline terminated."""
        e = event()
        row = parse_event(encode(e))
        assert row.endswith(b"\n")
        assert row.count(b"\t") == 7
        values = decode_row(row)
        assert values[:7] == [e[c] for c in COLUMNS[:7]]
        assert orjson.loads(values[7]) == e["data"]

    def test_column_order(self):
        """Columns come out in table order whatever the key order in the line."""
        e = event()
        shuffled = dict(reversed(list(e.items())))
        assert parse_event(encode(shuffled)) == parse_event(encode(e))

    def test_data_null(self):
        """data null becomes \\N, the COPY null marker."""
        row = parse_event(encode(event(data=None)))
        assert row.endswith(b"\t\\N\n")
        assert decode_row(row)[7] is None

    def test_data_empty_object(self):
        """An empty data object is stored as {}."""
        assert decode_row(parse_event(encode(event(data={}))))[7] == "{}"

    @pytest.mark.parametrize("field", TEXT_FIELDS)
    @pytest.mark.parametrize("special", ["\t", "\n", "\r", "\\", "a\\tb", "\\N", "x\\\n\t\ry", "\\101"])
    def test_special_characters_in_text(self, field, special):
        """Tabs, newlines, CRs and backslashes in a text field are escaped and decode back to the value."""
        value = f"before{special}after"
        e = event(**{field: value})
        row = parse_event(encode(e))
        assert row.count(b"\t") == 7
        values = decode_row(row)
        assert values[COLUMNS.index(field)] == value
        assert values[:7] == [e[c] for c in COLUMNS[:7]]

    @pytest.mark.parametrize("special", ["\t", "\n", "\r", "\\", "\\n", "\\u0041", '"', "\x01", "é ☃ 😀"])
    def test_special_characters_in_data(self, special):
        """Tabs, newlines, CRs, backslashes and escapes inside data decode back to the same JSON."""
        data = {"msg": f"a{special}b", f"k{special}": [special], "nested": {"v": special}}
        row = parse_event(encode(event(data=data)))
        assert row.count(b"\t") == 7
        assert orjson.loads(decode_row(row)[7]) == data

    @pytest.mark.parametrize("text", ["C:\\u0000dir", "\\\\u0000", "\\\\\\u0000x"])
    def test_backslash_u0000_text_in_data(self, text):
        """A literal backslash followed by u0000 in data is text, not a NUL, and is kept."""
        row = parse_event(encode(event(data={"path": text})))
        assert orjson.loads(decode_row(row)[7]) == {"path": text}

    def test_non_ascii_text(self):
        """Non-ASCII text passes through as UTF-8."""
        e = event(application_name="Zahlungsdienst-Ü", host_ip="10.0.0.1")
        assert decode_row(parse_event(encode(e)))[1] == "Zahlungsdienst-Ü"

    @pytest.mark.parametrize(
        "when",
        [
            "2026-11-28T05:30:00Z",
            "2026-11-28T05:30:00-07:00",
            "2026-11-28 05:30:00.5+05:30",
            "2024-02-29T23:59:59+00:00",
        ],
    )
    def test_time_forms(self, when):
        """RFC 3339 time stamps with Z, a negative or a half-hour offset, or a space separator are accepted."""
        assert decode_row(parse_event(encode(event(time=when))))[0] == when


class TestRejections:
    def test_invalid_json(self):
        """Broken JSON is rejected as invalid JSON."""
        assert rejected(encode(event())[:-5]).startswith("invalid JSON")

    @pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
    def test_invalid_utf8(self, bad):
        """Invalid UTF-8 is rejected with the byte offset of the first bad byte."""
        raw = encode(event()).replace(b'"WebApp"', b'"Web' + bad + b'App"')
        offset = raw.index(bad)
        assert rejected(raw).startswith(f"invalid UTF-8 at byte {offset}")

    def test_nul_byte(self):
        """A raw NUL byte is rejected with its offset."""
        raw = encode(event()).replace(b'"WebApp"', b'"Web\x00App"')
        offset = raw.index(b"\x00")
        assert rejected(raw).startswith(f"NUL byte at offset {offset}")

    @pytest.mark.parametrize("field", TEXT_FIELDS)
    def test_escaped_nul_in_text(self, field):
        """A \\u0000 escape in a text field is rejected naming the field."""
        reason = rejected(encode(event(**{field: "a\x00b"})))
        assert reason == f"field {field!r} contains \\u0000; PostgreSQL text cannot store it"

    @pytest.mark.parametrize(
        "data", [{"msg": "a\x00b"}, {"k\x00": 1}, {"deep": [{"x": "\x00"}]}, {"msg": "C:\\\x00"}, {"msg": "\\\\\x00"}]
    )
    def test_escaped_nul_in_data(self, data):
        """A \\u0000 escape anywhere in data is rejected naming data."""
        assert rejected(encode(event(data=data))) == "field 'data' contains \\u0000; PostgreSQL jsonb cannot store it"

    def test_bom(self):
        """A line starting with a UTF-8 byte order mark is rejected saying so."""
        assert "byte order mark" in rejected(b"\xef\xbb\xbf" + encode(event()))

    @pytest.mark.parametrize("raw", [b"", b" ", b"\t \r"])
    def test_blank_line(self, raw):
        """An empty or whitespace-only line is rejected as blank."""
        assert rejected(raw) == "blank line"

    @pytest.mark.parametrize(
        ("raw", "kind"),
        [(b"[1, 2]", "array"), (b"42", "number"), (b'"text"', "string"), (b"null", "null"), (b"true", "boolean")],
    )
    def test_not_an_object(self, raw, kind):
        """A JSON value other than an object is rejected naming what it is."""
        assert rejected(raw) == f"expected a JSON object, got a JSON {kind}"

    @pytest.mark.parametrize("field", COLUMNS)
    def test_missing_field(self, field):
        """Each of the eight fields is required."""
        assert rejected(encode(without(field))) == f"field {field!r} is missing"

    @pytest.mark.parametrize("field", TEXT_FIELDS)
    def test_empty_string(self, field):
        """An empty text field is rejected."""
        reason = rejected(encode(event(**{field: ""})))
        assert reason == f"field {field!r} must be a non-empty string, got an empty string"

    @pytest.mark.parametrize("field", TEXT_FIELDS)
    @pytest.mark.parametrize(("value", "kind"), [(7, "number"), (1.5, "number"), (None, "null"), (["a"], "array")])
    def test_wrong_type(self, field, value, kind):
        """A text field holding another JSON type is rejected naming the type."""
        reason = rejected(encode(event(**{field: value})))
        assert reason == f"field {field!r} must be a non-empty string, got a JSON {kind}"

    def test_unknown_field(self):
        """A field outside the contract is rejected by name."""
        reason = rejected(encode({**event(), "extra": 1}))
        assert reason.startswith("unknown field 'extra'; the contract has time, application_name")

    def test_unknown_field_replacing_a_known_one(self):
        """Eight fields with one unknown among them are rejected for the unknown one."""
        e = without("host_ip")
        e["hostip"] = "10.0.0.1"
        assert rejected(encode(e)).startswith("unknown field 'hostip'")

    @pytest.mark.parametrize(
        "when",
        [
            "2026-11-28T05:30:00",
            "2026-11-28T05:30:00.123",
            "2026-11-28",
            "28/11/2026 05:30:00+00:00",
            "2026-11-28T05:30:00+0000",
        ],
    )
    def test_time_without_offset(self, when):
        """A time stamp that is not RFC 3339 with an offset is rejected showing the value."""
        reason = rejected(encode(event(time=when)))
        assert reason.startswith(f"field 'time' must be an RFC 3339 timestamp with an offset, got {when!r} (write ")

    @pytest.mark.parametrize(
        "when",
        [
            "2026-02-30T00:00:00+00:00",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T05:61:00Z",
        ],
    )
    def test_impossible_date(self, when):
        """A well-formed but impossible date or time is rejected as not real."""
        assert rejected(encode(event(time=when))).startswith(f"field 'time' {when!r} is not a real date and time")

    def test_year_10000(self):
        """A five-digit year is rejected."""
        reason = rejected(encode(event(time="10000-01-01T00:00:00+00:00")))
        assert reason.startswith("field 'time' must be an RFC 3339 timestamp")

    def test_time_as_number(self):
        """A numeric time is rejected naming its type."""
        assert "got 'number'" in rejected(encode(event(time=1764307800)))

    @pytest.mark.parametrize(
        ("data", "kind"), [([1, 2], "array"), ("text", "string"), (3, "number"), (False, "boolean")]
    )
    def test_data_not_an_object(self, data, kind):
        """data other than an object or null is rejected naming its type."""
        assert rejected(encode(event(data=data))) == f"field 'data' must be a JSON object or null, got a JSON {kind}"

    @pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
    def test_nan(self, literal):
        """NaN and infinities are not JSON and are rejected as invalid JSON."""
        raw = encode(event(data={"x": 0})).replace(b'"x":0', b'"x":' + literal)
        assert rejected(raw).startswith("invalid JSON")

    def test_trailing_garbage(self):
        """Bytes after the closing brace make the line invalid JSON."""
        assert rejected(encode(event()) + b"}").startswith("invalid JSON")


class TestParseLine:
    def test_valid(self):
        """A valid line gives its row and no rejection."""
        raw = encode(event())
        assert parse_line(raw) == (parse_event(raw), [])

    def test_rejection_keeps_the_raw_line(self):
        """An invalid line gives no row and one rejection with the reason and the raw bytes."""
        raw = encode(without("trace_id"))
        assert parse_line(raw) == (None, [Rejection("field 'trace_id' is missing", raw)])

    @pytest.mark.parametrize(
        "fragment",
        [
            b'{"time":"2026-11-28T05:30:00.1+00:00","application_na',
            b'ion_name":"WebApp","data":{"a":{"b":1}',
            b"garbage",
            b'{"',
        ],
    )
    def test_fragment_before_valid_event(self, fragment):
        """A fragment glued before a valid event is rejected with its raw bytes; the event's row is returned."""
        valid = encode(event())
        row, rejections = parse_line(fragment + valid)
        assert row == parse_event(valid)
        assert rejections == [
            Rejection(
                f"fragment of {len(fragment)} bytes glued before a valid event (a writer stopped mid-line?)", fragment
            )
        ]

    def test_fragment_and_event_with_nested_objects(self):
        """A fragment before an event whose data holds nested objects still yields that whole event."""
        valid = encode(event(data={"a": {"b": {"c": 1}}, "l": [{"d": 2}]}))
        fragment = b'{"time":"2026'
        row, rejections = parse_line(fragment + valid)
        assert orjson.loads(decode_row(row)[7]) == {"a": {"b": {"c": 1}}, "l": [{"d": 2}]}
        assert [r.raw for r in rejections] == [fragment]

    @pytest.mark.parametrize(
        "raw",
        [
            b'garbage{"not":"an event"}',
            b'xx{"time":"2026-11-28T05:30:00Z"}',
            encode({**event(data={"inner": {"x": 1}}), "extra": True}),
        ],
    )
    def test_no_valid_event_later(self, raw):
        """A line with no valid event after its bad start is one rejection of the whole raw line."""
        row, rejections = parse_line(raw)
        assert row is None
        assert len(rejections) == 1
        assert rejections[0].raw == raw
        assert rejections[0].reason == rejected(raw)
