"""Judge one line against the event contract: its COPY row, or exactly why not; no input raises out of here."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import attrgetter

import msgspec

from reference.contract import (
    COLUMNS,
    DECODER,
    MAX_NESTING,
    TEXT_FIELDS,
    Event,
    Invalid,
    check_data,
    check_nesting,
    check_time,
    members,
    nesting,
    nesting_reason,
    repeated_key_reason,
    schema_reason,
)

__all__ = [
    "COLUMNS",
    "TEXT_FIELDS",
    "Invalid",
    "Rejection",
    "internal_errors",
    "parse_block",
    "parse_event",
    "parse_line",
    "parse_lines",
]

log = logging.getLogger(__name__)

UTF8_BOM = b"\xef\xbb\xbf"
ENCODE = msgspec.json.Encoder().encode
# Well-formed data nested past MAX_NESTING holds at least this many bytes: shorter data needs no nesting check.
NESTING_CHECK_LENGTH = 2 * (MAX_NESTING - 1)
# Where a glued line may restart: an object opening with one of the contract's keys. Events start so; the
# objects inside data rarely do, so a long line costs few attempts.
EVENT_START = re.compile(rb'\{[ \t\r\n]*"(?:' + b"|".join(c.encode() for c in COLUMNS) + rb')"')
# At most this many restarts per line, tried from the end: each re-decodes the rest of the line, so a hostile
# line full of event openings costs at most this many decodes (a real glued line needs one, plus one for each
# object opening with a contract key inside its own data).
MAX_RESTARTS = 32
# Unexpected exceptions met while judging a line, by kind (exception type): each became that line's rejection.
_INTERNAL_ERRORS: Counter[str] = Counter()


@dataclass(frozen=True)
class Rejection:
    """A line that will go to logs_rejected."""

    reason: str
    raw: bytes


def internal_errors() -> dict[str, int]:
    """How many lines an unexpected exception rejected so far, by exception type."""
    return dict(_INTERNAL_ERRORS)


def _decode_reason(raw: bytes, exc: msgspec.DecodeError) -> str:
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
    message = str(exc).removeprefix("JSON is malformed: ")
    if message == "Input data was truncated":
        message = "the line ends inside a JSON value (truncated)"
    return f"invalid JSON: {message}"


def _copy_texts(texts: tuple[str, ...]) -> str:
    """The six text fields as COPY text, escaped; Invalid for a NUL, which PostgreSQL text cannot hold."""
    for name, value in zip(TEXT_FIELDS, texts, strict=True):
        if "\x00" in value:
            raise Invalid(f"field {name!r} contains \\u0000; PostgreSQL text cannot store it")
    return "\t".join(
        t.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r") for t in texts
    )


def parse_event(raw: bytes) -> bytes:
    """Validate one line (without its newline) and return it as a COPY text row, newline included."""
    try:
        event = DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise Invalid(schema_reason(exc)) from None
    except msgspec.DecodeError as exc:
        raise Invalid(_decode_reason(raw, exc)) from None
    except RecursionError:
        depth = nesting(raw)
        if depth > MAX_NESTING:
            raise Invalid(nesting_reason(depth)) from None
        raise
    if raw[-1:] == b"\r":  # JSON whitespace, but a CRLF line ending means the writer's framing is wrong
        raise Invalid("line ends with CR (a CRLF line ending); end each line with \\n alone")
    fields = msgspec.structs.astuple(event)
    texts = fields[1:7]
    joined = "\t".join(texts)
    try:
        data_text = str(fields[7], "utf-8")  # msgspec checks the strings it decodes, not those inside a Raw value
    except UnicodeDecodeError:
        raise Invalid(_decode_reason(raw, msgspec.DecodeError())) from None
    # A line that re-encodes to itself has exactly its eight keys (0.5 us, a canonical line); any other is
    # counted exactly (1-2 us).
    if ENCODE(event) != raw and members(raw, fields[0], joined, data_text) != len(COLUMNS):
        raise Invalid(repeated_key_reason(raw))
    if len(data_text) > NESTING_CHECK_LENGTH:
        check_nesting(data_text)
    # Without a backslash in the line no string holds an escape, so no text holds a tab, newline, CR,
    # backslash or NUL (JSON strings cannot hold them raw): one memchr spares the per-field checks.
    plain = raw.find(b"\\") < 0
    data_copy = check_data(fields[7], data_text, plain)
    if not plain and (
        "\\" in joined or "\n" in joined or "\r" in joined or "\x00" in joined or joined.count("\t") != len(texts) - 1
    ):
        joined = _copy_texts(texts)
    return b"".join(((check_time(fields[0], plain) + "\t" + joined).encode(), b"\t", data_copy, b"\n"))


def _internal_error(raw: bytes, exc: Exception) -> Rejection:
    kind = type(exc).__name__
    _INTERNAL_ERRORS[kind] += 1
    if _INTERNAL_ERRORS[kind] == 1:  # once per kind: a flood of one bad shape must not flood the log
        log.error(
            "internal error while judging a line (%s), the line is rejected; later ones of this kind are only counted",
            kind,
            exc_info=exc,
        )
    return Rejection(f"internal error while judging the line: {kind}: {exc}"[:500], raw)


def glued_event(raw: bytes | bytearray, first: int = 0) -> tuple[int, bytes] | None:
    """(offset, COPY row) of a valid event that ends raw and starts at or after first, or None.

    Tried from the end: a good line glued behind a fragment is the only suffix that is a whole event (a proper
    suffix of an event ends with its closing brace twice), so the fragment may repeat event openings any number
    of times without costing an attempt.
    """
    starts = [match.start() for match in EVENT_START.finditer(raw, first)]
    for start in starts[: -MAX_RESTARTS - 1 : -1]:
        try:
            return start, parse_event(bytes(raw[start:]))
        except Invalid:
            continue
    return None


def parse_line(raw: bytes) -> tuple[bytes | None, list[Rejection]]:
    """Return (COPY row or None, rejections) for one line; never raises.

    A line whose start was cut off, or a fragment left by a writer that died mid-line followed by another
    writer's whole line, is split where a valid event begins: the fragment is rejected, the event lands.
    Anything unexpected while judging the line rejects that line, naming the internal error.
    """
    try:
        try:
            return parse_event(raw), []
        except Invalid as exc:
            # The message, not the exception: its traceback's frames would keep raw alive in a cycle until the GC.
            first = str(exc)
        if raw.startswith(UTF8_BOM):
            return None, [Rejection(first, raw)]  # a BOM is no writer's fragment: the whole line is refused
        glued = glued_event(raw, 1)
        if glued is None:
            return None, [Rejection(first, raw)]
        start, row = glued
        reason = f"fragment of {start} bytes glued before a valid event (a writer stopped mid-line?)"
        return row, [Rejection(reason, raw[:start])]
    except Exception as exc:  # noqa: BLE001 - the promise: no line stops the collector; this one is rejected instead
        return None, [_internal_error(raw, exc)]


# --- a whole read at once --------------------------------------------------------------------------------------


# A read's lines are judged in a handful of C calls when every one is canonical (the exact bytes msgspec encodes
# for its event: no spaces, the contract's key order, each key once) and holds no backslash (so no string holds
# an escape, a tab, a newline or a NUL, and no COPY escaping is needed): the project's emitter and Python's
# json.dumps(separators=(",", ":")) write such lines. Any read where one check fails is judged line by line,
# which is exact; the batch path only ever returns what parse_line returns for the same lines.
class _PlainEvent(Event, gc=False):
    """The contract's event with the time decoded to text: in a line without a backslash it is the text written."""

    time: str  # type: ignore[assignment]


_EVENTS = msgspec.json.Decoder(list[_PlainEvent])
_STAMPS = msgspec.json.Decoder(list[datetime])
_EVENT_JOINT = b'},{"time":'
_TEXTS = attrgetter("time", *TEXT_FIELDS)
_TIME = attrgetter("time")
_DATA = attrgetter("data")
_NULL = b"\\N"  # COPY's null: a null data
_RAW_NULL = msgspec.Raw(b"null")
# The stamps check_time returns as written on its fast path: an offset (Z or +HH:MM up to 15:59, which
# PostgreSQL takes), at most 6 fraction digits, a year PostgreSQL stores exactly; msgspec checks the ranges.
_STAMP = (
    r"(?!000[01]|9999)[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:[Zz]|[+-](?:0[0-9]|1[0-5]):[0-9]{2})"
)
_STAMP_LINES = re.compile(f"{_STAMP}(?:\n{_STAMP})*")
# The regex costs 0.4-0.6 us a stamp; most reads' stamps share one layout (the writer's format), which one
# translate and one compare prove (0.05 us a stamp): then the regex judges the first stamp only, and what the
# layout does not fix (years 0000-0009 and 9999, offset hours 10-15) sends the read to the regex.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _stamps_plain(times: bytes, count: int) -> bool:
    """True when every stamp (one a line in times) matches _STAMP."""
    first = times.find(b"\n")
    if first > 0:
        layout = times[:first].translate(_DIGITS_TO_ZERO)
        if (
            times.translate(_DIGITS_TO_ZERO) + b"\n" == (layout + b"\n") * count
            and b"\n000" not in times
            and b"\n9999" not in times
            and (layout[-3:-2] != b":" or times[first - 5 :: first + 1].count(b"0") == count)
        ):
            return _STAMP_LINES.fullmatch(times[:first].decode()) is not None
    return _STAMP_LINES.fullmatch(times.decode()) is not None


def _canonical_rows(block: bytes, count: int) -> list[bytes] | None:
    """The COPY rows of count lines joined by newlines, all canonical and plain (see above); None: judge each one."""
    if b"\\" in block or len(block) > count * NESTING_CHECK_LENGTH:
        return None  # escapes, or data long enough to need the nesting check in some line
    if b"\t" in block or b"\r" in block:
        # Only whitespace between data's tokens can be a raw tab or CR here (JSON strings cannot hold them, and the
        # re-encode below does not look inside data): the row must carry them escaped, as the exact path does.
        return None
    try:
        array = b"".join((b"[", block.replace(b"\n", b","), b"]"))  # one copy fewer than +
        events = _EVENTS.decode(array)
        # The array re-encodes to itself, so each event in it is canonical: its keys are the contract's, each
        # once (the decode checked every type and length). Each event starts {"time": and ends }, so each joint
        # between two events is a "},{"time":"; no line holds one, so the joints are the lines' joints: each line
        # is byte for byte the canonical encoding of its own event (one encode call, not one per line: 2x less).
        if len(events) != count or _EVENT_JOINT in block or ENCODE(events) != array:
            return None
        datas = list(map(_DATA, events))
        if max(map(len, datas)) > NESTING_CHECK_LENGTH:
            return None  # data long enough to need the nesting check
        times = "\n".join(map(_TIME, events)).encode()
        if not _stamps_plain(times, count):
            return None
        _STAMPS.decode(b'["' + times.replace(b"\n", b'","') + b'"]')  # real dates (not April 31)
        if not block.isascii():
            block.decode()  # msgspec checks UTF-8 in the strings it decodes, not inside data (a Raw value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    # Canonical data holds no newline: each value after one starts with its first byte.
    joined = b"\n".join([b"", *datas, b""])
    nulls = joined.count(b"\nnull\n")  # two nulls in a row share a newline: undercounted, judged line by line
    if joined.count(b"\n{") + nulls != count:
        return None  # data must be an object or null
    # Each row as text fields and a tab, data, newline: one bytes.join a row (a joined block cut with splitlines
    # cost 2,600 instructions a 430-byte row, its byte-by-byte scan).
    texts = ("\t\n".join(map("\t".join, map(_TEXTS, events))) + "\t").encode().split(b"\n")
    if nulls:
        datas = [_NULL if data == _RAW_NULL else data for data in datas]
    return list(map(b"".join, zip(texts, datas, repeat(b"\n"))))


def parse_block(block: bytes, count: int) -> tuple[list[bytes], list[Rejection]]:
    """parse_lines for count lines joined by newlines (a read as it came): the lines are split only if needed."""
    try:
        rows = _canonical_rows(block, count)
    except Exception:  # noqa: BLE001 - anything unexpected: the exact path judges each line (and names it)
        rows = None
    if rows is not None:
        return rows, []
    return _line_by_line(block.split(b"\n"))


def parse_lines(lines: list[bytes]) -> tuple[list[bytes], list[Rejection]]:
    """parse_line for a read's lines: (COPY rows, rejections), as the lines judged one by one give; never raises."""
    if lines:
        try:
            rows = _canonical_rows(b"\n".join(lines), len(lines))
        except Exception:  # noqa: BLE001 - anything unexpected: the exact path judges each line (and names it)
            rows = None
        if rows is not None:
            return rows, []
    return _line_by_line(lines)


def _line_by_line(lines: list[bytes]) -> tuple[list[bytes], list[Rejection]]:
    """parse_line on each line: (COPY rows, rejections)."""
    rows = []
    rejections: list[Rejection] = []
    for raw in lines:
        row, rejected = parse_line(raw)
        if row is not None:
            rows.append(row)
        rejections += rejected
    return rows, rejections
