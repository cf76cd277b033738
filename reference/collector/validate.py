"""Judge one line against the event contract: its COPY row, or exactly why not; no input raises out of here."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgspec

from reference.contract import (
    COLUMNS,
    DECODER,
    MAX_NESTING,
    TEXT_FIELDS,
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

try:
    # The compiled fast path (reference/collector/_fastrows.c): a line's COPY row in one C pass, 0.5-0.9 us against
    # 4-8 us through msgspec and Python. Every line it does not fully understand comes back as it is, for parse_line.
    from reference.collector import _fastrows
    from reference.collector._fastrows import copy_rows
except ImportError:  # built at install when a C compiler is at hand; without it every line takes parse_line
    copy_rows = None


def _stale_reason() -> str:
    """Why the compiled module must not be used ("" when it may): built from an older _fastrows.c than the one here.

    An editable install builds the module once, beside its source; a changed or checked-out _fastrows.c is not
    rebuilt, and the old module would judge lines by rules the code here no longer states (its tests too would
    test the old module). An installed wheel ships no source, so nothing is compared there.
    """
    if copy_rows is None:
        return ""
    built = Path(_fastrows.__file__ or "")
    source = built.with_name("_fastrows.c")
    try:
        stale = source.stat().st_mtime > built.stat().st_mtime
    except OSError:  # no source beside the module (a wheel), or no file for it
        return ""
    return f"{built} is older than {source}: rebuild it (pip install -e .)" if stale else ""


# The reason the compiled module is not used although it is built, or "".
STALE = _stale_reason()
if STALE:
    copy_rows = None
COMPILED = copy_rows is not None


def parse_block(block: bytes) -> tuple[list[bytes], list[Rejection]]:
    """parse_lines for lines joined by newlines (a read as it came): split in C, or here without the C part."""
    if copy_rows is None:
        return _line_by_line(block.split(b"\n"))
    try:
        items, unjudged = copy_rows(block)
    except MemoryError:  # judged line by line below, as without the compiled part
        return _line_by_line(block.split(b"\n"))
    if not unjudged:
        return items, []
    return _line_by_line(items, compiled=True)


def parse_lines(lines: list[bytes]) -> tuple[list[bytes], list[Rejection]]:
    """parse_line for a read's lines: (COPY rows, rejections), as the lines judged one by one give; never raises."""
    if copy_rows is None or not lines:
        return _line_by_line(lines)
    try:
        items, unjudged = copy_rows(b"\n".join(lines))
    except MemoryError:
        return _line_by_line(lines)
    # One item a line, unless a line held a newline (none from the splitter does): then the items are not the lines.
    if len(items) != len(lines):
        return _line_by_line(lines)
    if not unjudged:
        return items, []
    return _line_by_line(items, compiled=True)


def _line_by_line(lines: list[bytes], compiled: bool = False) -> tuple[list[bytes], list[Rejection]]:
    """parse_line on each line: (COPY rows, rejections). compiled: the lines are copy_rows' items, where an item that
    ends with a newline is a row judged already (a line handed back cannot end so)."""
    rows = []
    rejections: list[Rejection] = []
    for raw in lines:
        if compiled and raw[-1:] == b"\n":
            rows.append(raw)
            continue
        row, rejected = parse_line(raw)
        if row is not None:
            rows.append(row)
        rejections += rejected
    return rows, rejections
