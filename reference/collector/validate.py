"""Parse one line against the event contract and turn it into a COPY row, or say exactly why not."""

from __future__ import annotations

import json
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
    if not isinstance(when, str) or not RFC3339.fullmatch(when):
        shown = when if isinstance(when, str) else _type_name(when)
        raise Invalid(f"field 'time' must be an RFC 3339 timestamp with an offset, got {str(shown)[:64]!r}")
    try:
        datetime.fromisoformat(when)
    except ValueError as exc:
        raise Invalid(f"field 'time' {when!r} is not a real date and time: {exc}") from None
    texts = [when]
    for name in TEXT_FIELDS:
        value = event[name]
        if not isinstance(value, str) or not value:
            got = "an empty string" if value == "" else f"a JSON {_type_name(value)}"
            raise Invalid(f"field {name!r} must be a non-empty string, got {got}")
        if "\x00" in value:
            raise Invalid(f"field {name!r} contains \\u0000; PostgreSQL text cannot store it")
        texts.append(value)
    data = event["data"]
    if data is None:
        data_text = b"\\N"
    elif isinstance(data, dict):
        data_text = orjson.dumps(data)
        if b"\\u0000" in data_text and _ESCAPED_NUL.search(data_text):
            raise Invalid("field 'data' contains \\u0000; PostgreSQL jsonb cannot store it")
        data_text = data_text.replace(b"\\", b"\\\\")
    else:
        raise Invalid(f"field 'data' must be a JSON object or null, got a JSON {_type_name(data)}")
    # A compact line re-encodes to its own length; only a line that does not (whitespace, other escapes, or a
    # repeated key, which orjson resolves silently to the last value) pays for the exact duplicate check.
    if len(orjson.dumps(event)) != len(raw):
        repeated = _repeated_key(raw)
        if repeated is not None:
            raise Invalid(f"key {repeated!r} appears twice in one object; keys must be unique (which value is meant?)")
    # Checked per field: a tab inside a value must be escaped, and it looks like a separator once joined.
    row = "\t".join(_copy_text(t) for t in texts)
    return row.encode() + b"\t" + data_text + b"\n"


def parse_line(raw: bytes) -> tuple[bytes | None, list[Rejection]]:
    """Return (COPY row or None, rejections) for one line.

    A line whose start was cut off, or a fragment left by a writer that died mid-line followed by another
    writer's whole line, is split where a valid event begins: the fragment is rejected, the event lands.
    """
    try:
        return parse_event(raw), []
    except Invalid as exc:
        first = exc
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
