"""The classes of bad behaviour issue 11 found in the line contract, each pinned by examples (parse_line only)."""

from __future__ import annotations

import logging

import orjson
import pytest
from strategies import GOOD_FIELDS

from reference.collector import validate
from reference.collector.validate import parse_line

GOOD = GOOD_FIELDS


def line(data: bytes = b'{"user":"Ann"}', **changes: str) -> bytes:
    """A compact event line whose data is the given raw JSON bytes, with some text fields replaced."""
    fields = {**GOOD, **changes}
    return orjson.dumps(fields)[:-1] + b',"data":' + data + b"}"


def columns(row: bytes) -> list[bytes]:
    """The eight raw COPY fields of one row."""
    assert row.endswith(b"\n")
    return row[:-1].split(b"\t")


def accepted(raw: bytes) -> list[bytes]:
    """The COPY fields of an accepted line; fails the test when the line is rejected."""
    row, rejections = parse_line(raw)
    assert rejections == [], rejections
    assert row is not None
    return columns(row)


def reason(raw: bytes) -> str:
    """The one rejection reason of a refused line; fails the test when the line is accepted."""
    row, rejections = parse_line(raw)
    assert row is None, row
    assert len(rejections) == 1
    assert rejections[0].raw == raw
    return rejections[0].reason


def nested(depth: int) -> bytes:
    """data whose innermost value sits `depth` levels deep, the event object counted as level 1."""
    inner = depth - 2  # data's own object is level 2
    return b'{"n":' + b"[" * inner + b"1" + b"]" * inner + b"}"


class TestNoLineStopsTheCollector:
    """No input raises out of parse_line: too deep nesting is a rejection with a reason, whatever the depth."""

    @pytest.mark.parametrize("depth", [2, 100, 255, 256, 257, 300, 512, 1023, 1024, 1025, 3000, 50_000])
    def test_every_depth_gives_a_row_or_a_reason(self, depth):
        """Up to 256 levels land; deeper is rejected naming the depth (orjson.dumps used to raise at 255+)."""
        raw = line(nested(depth))
        row, rejections = parse_line(raw)
        if depth <= 256:
            assert rejections == []
            assert columns(row)[7] == nested(depth)
        else:
            assert row is None
            assert rejections[0].reason.startswith(f"JSON nested {depth} levels deep; at most 256 are allowed")

    @pytest.mark.parametrize(
        ("field", "why"),
        [
            ("application_name", "field 'application_name' must be a non-empty"),
            ("time", "JSON nested 5001 levels deep"),
        ],
    )
    def test_deep_nesting_in_another_field(self, field, why):
        """Deep nesting where a string belongs is rejected with a reason, never raised."""
        raw = line().replace(orjson.dumps(GOOD[field]), b"[" * 5000 + b"]" * 5000)
        assert reason(raw).startswith(why)

    def test_an_internal_error_rejects_only_its_line(self, monkeypatch, caplog):
        """An unexpected exception while judging a line becomes its rejection, is counted and logged once per kind.

        The fault is injected into the decoder (no real input is known to cause one; that is the point).
        """

        class Broken:
            def decode(self, raw: bytes) -> None:
                raise ZeroDivisionError("injected")

        before = validate.internal_errors().get("ZeroDivisionError", 0)
        monkeypatch.setattr(validate, "DECODER", Broken())
        with caplog.at_level(logging.ERROR, logger=validate.__name__):
            results = [parse_line(line()) for _ in range(3)]
        for row, rejections in results:
            assert row is None
            assert rejections[0].reason == "internal error while judging the line: ZeroDivisionError: injected"
            assert rejections[0].raw == line()
        assert validate.internal_errors()["ZeroDivisionError"] == before + 3
        assert len([r for r in caplog.records if "ZeroDivisionError" in r.getMessage()]) == (1 if before == 0 else 0)


class TestNumbersLandAsWritten:
    """data reaches jsonb as the bytes the writer sent: no number is rounded, widened or zeroed."""

    @pytest.mark.parametrize(
        "number",
        [
            b"123456789012345678901234567890",
            b"-98765432109876543210987654321098765432",
            b"0.1000000000000000055511151231257827",
            b"3.141592653589793238462643383279502884197",
            b"1e-400",
            b"1E+400",
            b"-0",
            b"0.0",
            b"1.0",
            b"1e5",
            b"-1.5E-7",
        ],
    )
    def test_number_bytes_are_kept(self, number):
        """The number's text is in the COPY row unchanged (jsonb parses it exactly)."""
        data = b'{"n":' + number + b',"l":[' + number + b"]}"
        assert accepted(line(data))[7] == data

    def test_whitespace_and_key_order_inside_data_are_passed_to_jsonb(self):
        """data's own spacing stays; a tab or CR between its tokens is escaped so the COPY row stays whole."""
        data = b'{ "b" :\t1 ,\r"a": [ 2 , 3 ] }'
        assert accepted(line(data))[7] == b'{ "b" :\\t1 ,\\r"a": [ 2 , 3 ] }'


class TestRepeatedKeys:
    """A repeated top-level key is always rejected, however the line is spaced, ordered or escaped."""

    def test_the_issue_example(self):
        """Two host_ip keys, and 21 numbers 1E+2 in data that orjson re-encoded 1 byte longer each (100.0),
        cancelling the 21 bytes the dropped key took: rejected (was accepted, the first host_ip lost)."""
        raw = line(b"{" + b",".join(b'"k%d":1E+2' % k for k in range(21)) + b"}")
        raw = raw.replace(b'"host_ip":"192.168.1.7"', b'"host_ip":"10.0.0.1","host_ip":"192.168.1.7"')
        assert reason(raw) == "key 'host_ip' appears twice in the event; keys must be unique (which value is meant?)"

    @pytest.mark.parametrize("key", [*GOOD, "data"])
    def test_each_key_twice(self, key):
        """Each of the eight keys, repeated with another value first, is named in the rejection."""
        first = b'{"x":1}' if key == "data" else orjson.dumps(GOOD[key])
        raw = line().replace(b"{", b'{"' + key.encode() + b'":' + first + b",", 1)
        assert reason(raw).startswith(f"key {key!r} appears twice")

    @pytest.mark.parametrize("padding", [b" ", b"\t", b"\r\n ", b"  \t "])
    def test_spaced_repeats(self, padding):
        """Whitespace around keys, colons and values does not hide a repeat."""
        raw = line().replace(
            b'"log_event":',
            b'"log_event"' + padding + b":" + padding + b'"x"' + padding + b"," + padding + b'"log_event":',
        )
        assert reason(raw).startswith("key 'log_event' appears twice")

    def test_escaped_colons_do_not_hide_a_repeat(self):
        """A text written with \\u003a escapes (a colon without a ':' byte) does not offset a repeated key."""
        raw = line(file_path="a:b:c").replace(b"a:b:c", b"a\\u003ab\\u003Ac")
        assert accepted(raw)[5] == b"a:b:c"
        repeated = raw.replace(b'"host_ip":', b'"host_ip":"1.1.1.1","host_ip":')
        assert reason(repeated).startswith("key 'host_ip' appears twice")

    def test_escaped_key_names_count_as_the_key(self):
        """A key spelled with escapes is the same key: "t\\u0069me" twice with "time" is a repeat."""
        raw = line().replace(b"{", b'{"t\\u0069me":"2026-11-28T05:30:00Z",', 1)
        assert reason(raw).startswith("key 'time' appears twice")

    def test_repeats_inside_data_are_stored_as_jsonb_stores_them(self):
        """Inside data a repeated key is passed on: jsonb keeps the last value (the documented rule)."""
        data = b'{"a":1,"a":2,"n":{"b":1,"b":3}}'
        assert accepted(line(data))[7] == data

    def test_crlf_with_exponents(self):
        """A CRLF line is rejected even when data's numbers would re-encode longer (the length trick let it in)."""
        raw = line(b'{"a":1E+2}') + b"\r"
        assert reason(raw) == "line ends with CR (a CRLF line ending); end each line with \\n alone"


class TestTimeStamps:
    """Every RFC 3339 date-time is accepted and stored as the instant it denotes; anything else names the rule."""

    @pytest.mark.parametrize(
        "when",
        [
            "2026-11-28t05:30:00z",
            "2026-11-28T05:30:00z",
            "2026-11-28t05:30:00.5+01:00",
            "2026-11-28 05:30:00Z",
            "2026-11-28T05:30:00-00:00",
            "2024-02-29T23:59:59.999999+15:59",
            "2026-11-28T05:30:00.1-15:59",
        ],
    )
    def test_forms_stored_as_written(self, when):
        """Lowercase t and z, a space, -00:00 and offsets PostgreSQL takes are passed on as written."""
        assert accepted(line(time=when))[0] == when.encode()

    @pytest.mark.parametrize(
        ("when", "stored"),
        [
            ("2016-12-31T23:59:60Z", "2017-01-01 00:00:00.000000+00:00"),
            ("2016-12-31T23:59:60.5Z", "2017-01-01 00:00:00.500000+00:00"),
            ("2016-12-31T23:59:60.5+01:00", "2016-12-31 23:00:00.500000+00:00"),
            ("2026-11-28T05:30:00+20:00", "2026-11-27 09:30:00.000000+00:00"),
            ("2026-11-28T05:30:00.123-23:59", "2026-11-29 05:29:00.123000+00:00"),
            ("2026-11-28T05:30:00.1234565Z", "2026-11-28 05:30:00.123456+00:00"),
            ("2026-11-28T05:30:00.9999995Z", "2026-11-28 05:30:01.000000+00:00"),
            ("2026-11-28T05:30:00." + "1" * 200 + "Z", "2026-11-28 05:30:00.111111+00:00"),
            ("0001-01-01T00:00:00Z", "0001-01-01 00:00:00.000000+00:00"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31 23:59:59.999999+00:00"),
        ],
    )
    def test_forms_stored_as_their_utc_instant(self, when, stored):
        """Leap seconds, offsets beyond +-15:59 and over 6 fraction digits are stored as the UTC instant.

        A leap second is the second after :59 (timestamptz counts POSIX time); fractions round to the microsecond
        as PostgreSQL rounds them (rint of the double).
        """
        assert accepted(line(time=when))[0] == stored.encode()

    @pytest.mark.parametrize(
        ("when", "why"),
        [
            ("2026-02-29T00:00:00Z", "2026-02 has no day 29"),
            ("2026-04-31T00:00:00Z", "2026-04 has no day 31"),
            ("2026-13-01T00:00:00Z", "month 13 is not 01-12"),
            ("2026-11-28T24:00:00Z", "hour 24 is not 00-23"),
            ("2026-11-28T05:60:00Z", "minute 60 is not 00-59"),
            ("2026-11-28T05:30:61Z", "second 61 is not 00-60"),
            ("2026-11-28T05:30:00+24:00", "offset hour 24 is not 00-23"),
            ("2026-11-28T05:30:00+01:60", "offset minute 60 is not 00-59"),
        ],
    )
    def test_impossible_values_name_the_field(self, when, why):
        """A stamp of the right shape with an impossible value says which value (it used to say only "not real")."""
        assert reason(line(time=when)) == f"field 'time' {when!r} is not a real date and time: {why}"

    @pytest.mark.parametrize(
        "when",
        [
            "2026-11-28T05:30:00",
            "2026-11-28T05:30:00+0100",
            "2026-11-28T05:30:00+01",
            "2026-11-28T05:30Z",
            "2026-11-28",
            "20261128T053000Z",
            "2026-11-28T05:30:00.Z",
            "2026-11-28T05:30:00,5Z",
            "2026-11-28_05:30:00Z",
            "٢٠٢٦-11-28T05:30:00Z",
            "2026-11-28T05:30:00 Z",
            " 2026-11-28T05:30:00Z",
            "2026-11-28T05:30:00Z ",
            "",
            "10000-01-01T00:00:00Z",
            "2026-W48-6T05:30:00Z",
        ],
    )
    def test_other_shapes_are_not_rfc_3339(self, when):
        """No offset, a basic-format offset, missing seconds, other digits or spaces: rejected showing the value."""
        assert reason(line(time=when)).startswith(
            f"field 'time' must be an RFC 3339 timestamp with an offset, got {when!r} (write "
        )

    def test_year_0000_cannot_be_stored(self):
        """Year 0000 is valid RFC 3339 but PostgreSQL has no year 0: rejected saying so."""
        assert "year 0000 cannot be stored" in reason(line(time="0000-06-01T00:00:00Z"))

    @pytest.mark.parametrize("when", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
    def test_instants_outside_years_1_to_9999(self, when):
        """A stamp whose offset moves the instant out of years 0001-9999 is rejected naming the range."""
        assert "outside the years 0001-9999" in reason(line(time=when))

    def test_escaped_stamp(self):
        """A stamp written with JSON escapes is judged and stored as the text it decodes to."""
        raw = line().replace(b"05:30:00.123456+00:00", b"05\\u003a30:00.123456\\u002b00:00")
        assert accepted(raw)[0] == b"2026-11-28T05:30:00.123456+00:00"

    def test_time_of_another_type(self):
        """A time that is not a string says which JSON type it is."""
        raw = line().replace(b'"2026-11-28T05:30:00.123456+00:00"', b"[1]")
        assert reason(raw).startswith("field 'time' must be an RFC 3339 timestamp with an offset, got 'array'")


class TestTextAndData:
    """What PostgreSQL text and jsonb cannot hold is refused with a reason; everything else passes."""

    def test_invalid_utf8_inside_data(self):
        """A bad byte inside a data string is refused with its offset (msgspec does not check a Raw value's text)."""
        raw = line(b'{"user":"A\xffnn"}')
        offset = raw.index(b"\xff")
        assert reason(raw) == f"invalid UTF-8 at byte {offset}: invalid start byte"

    def test_invalid_utf8_inside_time(self):
        """A bad byte inside the time string is refused."""
        raw = line().replace(b"05:30:00.123456", b"05:30:00.12\xff456")
        assert "field 'time'" in reason(raw)

    @pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00", b"\\ud800\\u0041"])
    def test_lone_surrogates(self, escape):
        """A lone UTF-16 surrogate (jsonb refuses it) is invalid JSON, in data and in text."""
        assert reason(line(b'{"s":"' + escape + b'"}')).startswith("invalid JSON")
        assert reason(line().replace(b"WebApp", b"Web" + escape)).startswith("invalid JSON")

    def test_surrogate_pair_is_one_character(self):
        """An escaped surrogate pair is one character, stored as written (jsonb decodes it)."""
        assert accepted(line(b'{"s":"\\ud83d\\ude00"}'))[7] == b'{"s":"\\\\ud83d\\\\ude00"}'
