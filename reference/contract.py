"""The event contract: the eight fields as a msgspec schema, and the few exact checks a schema cannot express."""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

# Column order of the logs table; COPY rows are built in this order, and the schema declares the fields in it.
COLUMNS = ("time", "application_name", "environment_name", "log_event", "trace_id", "file_path", "host_ip", "data")
TEXT_FIELDS = COLUMNS[1:7]
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]


class Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One log line: seven strings and `data`, kept as the raw bytes the writer sent (jsonb parses them)."""

    time: msgspec.Raw  # RFC 3339 text, checked by check_time with msgspec's own C parser, kept as written
    application_name: NonEmptyText
    environment_name: NonEmptyText
    log_event: NonEmptyText
    trace_id: NonEmptyText
    file_path: NonEmptyText
    host_ip: NonEmptyText
    data: msgspec.Raw  # an object or null (check_data); never decoded, so numbers reach jsonb exactly as written


DECODER = msgspec.json.Decoder(Event)
# Objects and arrays nested deeper than this (the event object is level 1) are refused: msgspec recurses once per
# level on Python's stack (limit 1,000 frames shared with its caller) and raises RecursionError somewhere past
# 900, depending on the caller; a fixed bound well below that makes the rule the same wherever parse_line runs.
# jsonb itself accepts about 20,000 levels.
MAX_NESTING = 256


class Invalid(ValueError):
    """A line that breaks the contract; the message names the rule and the place."""


# --- time: RFC 3339 section 5.6 date-time, and the space its note allows between date and time -----------------

# The grammar, ranges included; day 29-31 is checked against the month afterwards. ASCII digits only ([0-9]:
# Python's \d also matches other scripts' digits).
_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):([0-5][0-9]):"
    r"([0-5][0-9]|60)(?:\.([0-9]+))?(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)
# The shape alone, to say which range a stamp of the right shape breaks.
_TIME_SHAPE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)
TIME_RULE = "an RFC 3339 timestamp with an offset"
TIME_HINT = "write YYYY-MM-DDTHH:MM:SS[.fraction] then Z or +HH:MM"
# PostgreSQL refuses offsets beyond +-15:59 (RFC 3339 allows up to 23:59), and parses fractions of up to
# 6 digits exactly: stamps outside that, and leap seconds, are rewritten as the UTC instant they denote.
PG_MAX_OFFSET_HOUR = "15"
PG_FRACTION_DIGITS = 6


_DATETIME = msgspec.json.Decoder(datetime)
# The longest stamps PostgreSQL parses exactly, with their 6 fraction digits.
_LONGEST_Z = len("2026-11-28T05:30:00.123456Z")
_LONGEST_OFFSET = len("2026-11-28T05:30:00.123456+00:00")


def check_time(time_raw: msgspec.Raw, plain: bool = False) -> str:
    """The time field's COPY text: the stamp as written, or the instant it denotes in UTC; Invalid names the rule.

    msgspec's C parser (0.2 us) judges the usual stamp: it accepts exactly the RFC 3339 date-times (a property
    test compares it with _TIME) plus a missing offset and +HHMM, which the checks on the text exclude. The rest
    (escapes, leap seconds, offsets PostgreSQL refuses, long fractions, years 0000/0001/9999, and every rejection)
    takes the exact path through _TIME. plain: the line holds no backslash, so the stamp has no JSON escape.
    """
    try:
        stamp = _DATETIME.decode(time_raw)
        text = str(time_raw, "ascii")[1:-1]  # a stray non-ASCII byte takes the exact path
    except (msgspec.DecodeError, UnicodeDecodeError):  # DecodeError and its subclass ValidationError
        stamp = None
    if stamp is not None and stamp.tzinfo is not None and 1 < stamp.year < 9999 and (plain or "\\" not in text):
        if text[-1] in "Zz":
            if len(text) <= _LONGEST_Z:
                return text
        elif text[-3] == ":" and len(text) <= _LONGEST_OFFSET and text[-5:-3] <= PG_MAX_OFFSET_HOUR:
            return text
    try:
        when = msgspec.json.decode(time_raw)
    except msgspec.DecodeError as exc:  # msgspec does not check UTF-8 inside a Raw value
        raise Invalid(f"field 'time' is not a valid JSON string: {exc}") from None
    if not isinstance(when, str):
        kind = {bool: "boolean", type(None): "null", list: "array", dict: "object"}.get(type(when), "number")
        raise Invalid(f"field 'time' must be {TIME_RULE}, got {kind!r} ({TIME_HINT})")
    return check_time_text(when)


def check_time_text(when: str) -> str:
    """check_time on decoded text, with the grammar alone: the stamp itself, or the instant it denotes in UTC."""
    match = _TIME.fullmatch(when)
    if match is None:
        raise Invalid(_time_reason(when))
    year, month, day, _hour, _minute, second, fraction, _sign, offset_hour, _offset_minute = match.groups()
    if day > "28" and int(day) > calendar.monthrange(int(year), int(month))[1]:
        raise Invalid(f"field 'time' {when!r} is not a real date and time: {year}-{month} has no day {day}")
    if (
        second == "60"
        or (fraction is not None and len(fraction) > PG_FRACTION_DIGITS)
        or (offset_hour is not None and offset_hour > PG_MAX_OFFSET_HOUR)
        or year in ("0000", "0001", "9999")
    ):
        return _utc_text(when, match)
    return when


def _utc_text(when: str, match: re.Match[str]) -> str:
    """The instant a valid stamp denotes, as UTC text PostgreSQL parses exactly (the rare stamps it would not)."""
    year, month, day, hour, minute, second, fraction, sign, offset_hour, offset_minute = match.groups()
    if year == "0000":
        raise Invalid(f"field 'time' {when!r}: year 0000 cannot be stored (PostgreSQL's calendar has no year 0)")
    # A leap second (:60) is the second after :59: POSIX time, which timestamptz counts, has no leap seconds.
    # More than 6 fraction digits are rounded to the microsecond exactly as PostgreSQL does (rint of the double).
    micro = round(float(f"0.{fraction}") * 1_000_000) if fraction else 0
    offset = 0 if sign is None else (int(offset_hour) * 60 + int(offset_minute)) * (1 if sign == "+" else -1)
    try:
        instant = datetime(int(year), int(month), int(day), int(hour), int(minute), tzinfo=UTC) + timedelta(
            seconds=int(second), microseconds=micro, minutes=-offset
        )
    except OverflowError:
        raise Invalid(
            f"field 'time' {when!r} denotes an instant outside the years 0001-9999 (UTC), which the contract stores"
        ) from None
    return instant.isoformat(sep=" ", timespec="microseconds")


def _time_reason(when: str) -> str:
    shape = _TIME_SHAPE.fullmatch(when)
    if shape is None:
        return f"field 'time' must be {TIME_RULE}, got {when[:64]!r} ({TIME_HINT})"
    _year, month, day, hour, minute, second, offset_hour, offset_minute = shape.groups()
    ranges = (
        ("month", month, 1, 12),
        ("day", day, 1, 31),
        ("hour", hour, 0, 23),
        ("minute", minute, 0, 59),
        ("second", second, 0, 60),
        ("offset hour", offset_hour, 0, 23),
        ("offset minute", offset_minute, 0, 59),
    )
    for name, value, low, high in ranges:
        if value is not None and not low <= int(value) <= high:
            return f"field 'time' {when!r} is not a real date and time: {name} {value} is not {low:02d}-{high:02d}"
    return f"field 'time' {when!r} is not a real date and time"  # not reached: _TIME accepts every other shape


# --- data: an object or null, stored by jsonb as written -------------------------------------------------------

# \u0000 is a NUL only when its backslash is not itself escaped ("\\u0000" is text); jsonb refuses the NUL.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_RAW_KINDS = {"[": "array", '"': "string", "t": "boolean", "f": "boolean"}


def check_data(data: msgspec.Raw, text: str, plain: bool) -> bytes | msgspec.Raw:
    """data's COPY text (\\N for null); Invalid unless data is an object jsonb can store, or null.

    text is data decoded (UTF-8 checked; str searches use memchr, bytes ones walk every byte); plain: the line
    holds no backslash, so data has neither a \\u0000 nor a backslash to double for COPY.
    """
    if text[0] != "{":
        if text == "null":
            return b"\\N"
        raise Invalid(f"field 'data' must be a JSON object or null, got a JSON {_RAW_KINDS.get(text[0], 'number')}")
    out: bytes | msgspec.Raw = data
    if not plain and "\\" in text:
        raw = bytes(data)
        if "\\u0000" in text and _ESCAPED_NUL.search(raw):
            raise Invalid("field 'data' contains \\u0000; PostgreSQL jsonb cannot store it")
        out = raw.replace(b"\\", b"\\\\")  # COPY text doubles a backslash
    # A tab or CR (JSON whitespace between tokens) would end the COPY field or the row early.
    if "\t" in text or "\r" in text:
        out = bytes(out).replace(b"\t", b"\\t").replace(b"\r", b"\\r")
    return out


# --- nesting ---------------------------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[{]+|[\]}]+")


def nesting(raw: bytes) -> int:
    """How deep objects and arrays nest in raw (brackets inside strings do not count)."""
    depth = deepest = 0
    for run in _BRACKETS.finditer(_STRING.sub(b"", raw)):
        token = run.group()
        if token[0] in b"[{":
            depth += len(token)
            deepest = max(deepest, depth)
        else:
            depth -= len(token)
    return deepest


def nesting_reason(depth: int) -> str:
    """The reason for a line nested deeper than MAX_NESTING."""
    return (
        f"JSON nested {depth} levels deep; at most {MAX_NESTING} are allowed (objects and arrays, the event "
        "itself included)"
    )


def check_nesting(data: str) -> None:
    """Invalid if the event nests deeper than MAX_NESTING; data is its decoded (so well-formed) data value.

    Well-formed JSON nested d levels deep holds at least 2d bytes: an ordinary line is judged by its length alone.
    """
    if 1 + len(data) // 2 > MAX_NESTING:
        depth = 1 + nesting(data.encode())
        if depth > MAX_NESTING:
            raise Invalid(nesting_reason(depth))


# --- repeated keys ---------------------------------------------------------------------------------------------

# A \u003a escape decodes to ":" without a ":" byte in the line; only counted when the line holds "\u003".
_ESCAPED_COLON = re.compile(rb"(?<!\\)(?:\\\\)*\\u003[aA]")


def members(raw: bytes, time_raw: msgspec.Raw, texts: str, data: str) -> int:
    """How many members the top-level object of a decoded line has, counted exactly from its ':' bytes.

    Outside strings a ':' only separates a key from its value, one per member at every level. The line's ':'
    bytes are: one per top-level member, those inside the time and data values (counted in their raw text),
    those inside the six decoded texts that survived (texts, tab-joined, minus those the line wrote as \\u003a),
    and those inside members a repeated key overwrote. So the result is the member count when no key repeats,
    and above 8 when one does: exact, whatever the spacing, order or escapes (no length guess).
    """
    time_bytes = bytes(time_raw)  # not decoded: msgspec does not check UTF-8 inside a Raw value
    count = raw.count(b":") - time_bytes.count(b":") - data.count(":") - texts.count(":")
    if raw.find(b"\\") >= 0 and raw.find(b"\\u003") >= 0:
        count += len(_ESCAPED_COLON.findall(raw))
        count -= len(_ESCAPED_COLON.findall(time_bytes)) + len(_ESCAPED_COLON.findall(data.encode()))
    return count


def repeated_key_reason(raw: bytes) -> str:
    """The reason for a line whose top-level object repeats a key, naming the key when it can."""
    try:
        pairs = json.loads(raw, object_pairs_hook=list)
    except (ValueError, RecursionError):
        pairs = []
    seen: set[str] = set()
    for key, _value in pairs if isinstance(pairs, list) else ():
        if key in seen:
            return f"key {key!r} appears twice in the event; keys must be unique (which value is meant?)"
        seen.add(key)
    return "a key appears twice in the event; keys must be unique (which value is meant?)"


# --- schema errors as human reasons ----------------------------------------------------------------------------

_MSGSPEC_TYPES = {
    "int": "number",
    "float": "number",
    "bool": "boolean",
    "null": "null",
    "array": "array",
    "object": "object",
    "str": "string",
}
_WRONG_TYPE = re.compile(r"Expected `(\w+)`(?: of length >= 1)?, got `(\w+)`(?: - at `\$\.(\w+)`)?")
_MISSING = re.compile(r"Object missing required field `(.*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")


def schema_reason(exc: msgspec.ValidationError) -> str:
    """What a schema error means for the writer, in the contract's words."""
    message = str(exc)
    if match := _MISSING.fullmatch(message):
        return f"field {match.group(1)!r} is missing"
    if match := _UNKNOWN.fullmatch(message):
        return f"unknown field {match.group(1)!r}; the contract has {', '.join(COLUMNS)}"
    if message.startswith("Expected `str` of length >= 1") and (field := message.rpartition("$.")[2][:-1]):
        return f"field {field!r} must be a non-empty string, got an empty string"
    if match := _WRONG_TYPE.fullmatch(message):
        got = _MSGSPEC_TYPES.get(match.group(2), match.group(2))
        field = match.group(3)
        if field is None:
            return f"expected a JSON object, got a JSON {got}"
        if field == "time":
            return f"field 'time' must be {TIME_RULE}, got {got!r} ({TIME_HINT})"
        return f"field {field!r} must be a non-empty string, got a JSON {got}"
    return f"the line breaks the event contract: {message}"
