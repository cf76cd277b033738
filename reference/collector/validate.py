"""Parse one line against the event contract and turn it into a COPY row, or say exactly why not."""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from datetime import datetime

import orjson

# Column order of the logs table; COPY rows are built in this order.
COLUMNS = ("time", "application_name", "environment_name", "log_event", "trace_id", "file_path", "host_ip",
           "data")
TEXT_FIELDS = COLUMNS[1:7]
KNOWN_FIELDS = frozenset(COLUMNS)
# RFC 3339: date, "T" (or space), time, optional fraction, and a mandatory offset.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
# \u0000 in encoded JSON is a NUL only when its backslash is not itself escaped ("\\u0000" is text).
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
UTF8_BOM = b"\xef\xbb\xbf"
# Where a glued line may restart: the opening of a JSON object.
OBJECT_START = b'{"'
# The time stamp and the six text fields, in table order, in one call.
_ROW_TEXTS = operator.itemgetter(*COLUMNS[:7])
# Bytes of a compact event that do not depend on its values: braces, 7 commas, and '"key":' for each column.
_EVENT_FRAME_BYTES = 2 + (len(COLUMNS) - 1) + sum(len(c) + 3 for c in COLUMNS)
# orjson.dumps of the seven row texts adds 2 brackets and 6 commas, and 2 quotes per text when none needs escaping;
# "\t".join adds 6 tabs: the two lengths differ by exactly this when no text needs a JSON (so a COPY) escape.
_PLAIN_TEXTS_EXTRA = 2 + 6 + 2 * 7 - 6
# Time stamps of the common shape (2026-11-28T05:30:00.123456+00:00) already checked in full, without their six
# fraction digits: neither the pattern nor fromisoformat (it truncates) judges those digits' values, so a stamp
# with a known key passes the full check too. One key per second and offset: 4096 hold over an hour of one
# writer's stamps; the set is cleared when full.
_GOOD_TIMES: set[str] = set()
MAX_GOOD_TIMES = 4096
_COMMON_TIME_LENGTH = len("2026-11-28T05:30:00.123456+00:00")


class Invalid(ValueError):
    """A line that breaks the contract; the message names the rule and the place."""


@dataclass(frozen=True)
class Rejection:
    """A line that will go to logs_rejected."""

    reason: str
    raw: bytes


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    if raw.startswith(UTF8_BOM):
        return "line starts with a UTF-8 byte order mark; write JSON without a BOM"
    nul = raw.find(b"\x00")
    if nul >= 0:
        return f"NUL byte at offset {nul}; PostgreSQL text cannot store it"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8 at byte {err.start}: {err.reason}"
    if not raw.strip():
        return "blank line"
    return f"invalid JSON: {exc}"


class _Repeated(Exception):
    pass


def _refuse_repeats(pairs: list[tuple[str, object]]) -> dict:
    seen = set()
    for key, _value in pairs:
        if key in seen:
            raise _Repeated(key)
        seen.add(key)
    return dict(pairs)


def _repeated_key(raw: bytes) -> str | None:
    """The first key repeated inside one JSON object of raw, or None (the slow, exact check)."""
    try:
        json.loads(raw, object_pairs_hook=_refuse_repeats)
    except _Repeated as exc:
        return str(exc.args[0])
    except ValueError:
        return None  # orjson accepted it; the standard library's stricter limits are not ours to enforce
    return None


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _check_time(when: object) -> None:
    """The full check of the time field: RFC 3339 with an offset, and a real date and time."""
    if not isinstance(when, str) or not RFC3339.fullmatch(when):
        shown = when if isinstance(when, str) else _type_name(when)
        raise Invalid(f"field 'time' must be an RFC 3339 timestamp with an offset, got {str(shown)[:64]!r}")
    try:
        datetime.fromisoformat(when)
    except ValueError as exc:
        raise Invalid(f"field 'time' {when!r} is not a real date and time: {exc}") from None


def _checked_texts(texts: tuple) -> bytes:
    """The time and text fields as COPY text, tab separated; raises Invalid naming the first bad field."""
    for name, value in zip(TEXT_FIELDS, texts[1:], strict=True):
        if not isinstance(value, str) or not value:
            got = "an empty string" if value == "" else f"a JSON {_type_name(value)}"
            raise Invalid(f"field {name!r} must be a non-empty string, got {got}")
        if "\x00" in value:
            raise Invalid(f"field {name!r} contains \\u0000; PostgreSQL text cannot store it")
    # Checked per field: a tab inside a value must be escaped, and it looks like a separator once joined.
    return "\t".join(_copy_text(t) for t in texts).encode()


def parse_event(raw: bytes) -> bytes:
    """Validate one line (without its newline) and return it as a COPY text row, newline included."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(_decode_error(raw, exc)) from None
    if not isinstance(event, dict):
        raise Invalid(f"expected a JSON object, got a JSON {_type_name(event)}")
    if len(event) != len(COLUMNS) or not KNOWN_FIELDS.issuperset(event):
        unknown = sorted(set(event) - KNOWN_FIELDS)
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r}; the contract has {', '.join(COLUMNS)}")
        missing = [c for c in COLUMNS if c not in event]
        raise Invalid(f"field {missing[0]!r} is missing")
    when = event["time"]
    # Tuning: pattern + fromisoformat cost 0.89 us an emitter stamp, this lookup 0.52 us (medians of 40 rounds, see
    # docs/performance.md); a general key (any fraction length, Z) measured no faster, so only this shape is cached.
    if (isinstance(when, str) and len(when) == _COMMON_TIME_LENGTH and when.isascii() and when[19] == "."
            and when[20:26].isdigit()):
        key = when[:19] + when[26:]
        if key not in _GOOD_TIMES:
            _check_time(when)
            if len(_GOOD_TIMES) >= MAX_GOOD_TIMES:
                _GOOD_TIMES.clear()
            _GOOD_TIMES.add(key)
    else:
        _check_time(when)
    texts = _ROW_TEXTS(event)
    # Tuning: one join and one orjson.dumps of the texts (0.77 us a small line) replace the per-field checks and
    # regex searches (4.2 us). When every value is a non-empty string and none needs a JSON escape, none holds a NUL,
    # tab, newline, CR or backslash, so the COPY text is the plain join; anything else takes the per-field path and
    # its messages.
    try:
        row_text = "\t".join(texts).encode()
    except TypeError:
        row_text = None
    if row_text is None or "" in texts or len(texts_json := orjson.dumps(texts)) != len(row_text) + _PLAIN_TEXTS_EXTRA:
        row_text = _checked_texts(texts)
        texts_json = orjson.dumps(texts)
    data = event["data"]
    if data is None:
        data_json = b"null"
        data_text = b"\\N"
    elif isinstance(data, dict):
        data_json = orjson.dumps(data)
        data_text = data_json
        # Tuning: a one-byte memchr gates the 6-byte search: 3.0 -> 1.4 us a pipe_buf line, 0.43 -> 0.31 us a small one.
        if b"\\" in data_json:
            if b"\\u0000" in data_json and _ESCAPED_NUL.search(data_json):
                raise Invalid("field 'data' contains \\u0000; PostgreSQL jsonb cannot store it")
            data_text = data_json.replace(b"\\", b"\\\\")
    else:
        raise Invalid(f"field 'data' must be a JSON object or null, got a JSON {_type_name(data)}")
    # A compact line re-encodes to its own length; only a line that does not (whitespace, other escapes, or a
    # repeated key, which orjson resolves silently to the last value) pays for the exact duplicate check.
    # Tuning: the re-encoded length is summed from the parts already encoded above instead of a second
    # orjson.dumps of the whole event (saves 0.64 us a small line, 2.1 us a pipe_buf one); it is the same number.
    if _EVENT_FRAME_BYTES + len(texts_json) - 8 + len(data_json) != len(raw):
        if raw.endswith(b"\r"):
            raise Invalid("line ends with CR (a CRLF line ending); end each line with \\n alone")
        repeated = _repeated_key(raw)
        if repeated is not None:
            raise Invalid(f"key {repeated!r} appears twice in one object; keys must be unique (which value is meant?)")
    return b"".join((row_text, b"\t", data_text, b"\n"))


def parse_line(raw: bytes) -> tuple[bytes | None, list[Rejection]]:
    """Return (COPY row or None, rejections) for one line.

    A line whose start was cut off, or a fragment left by a writer that died mid-line followed by another
    writer's whole line, is split where a valid event begins: the fragment is rejected, the event lands.
    """
    try:
        return parse_event(raw), []
    except Invalid as exc:
        first = exc
    if raw.startswith(UTF8_BOM):
        return None, [Rejection(str(first), raw)]  # a BOM is no writer's fragment: the whole line is refused
    start = raw.find(OBJECT_START, 1)
    while start > 0:
        try:
            row = parse_event(raw[start:])
        except Invalid:
            start = raw.find(OBJECT_START, start + 1)
            continue
        reason = f"fragment of {start} bytes glued before a valid event (a writer stopped mid-line?)"
        return row, [Rejection(reason, raw[:start])]
    return None, [Rejection(str(first), raw)]
