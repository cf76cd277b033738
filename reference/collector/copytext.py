"""PostgreSQL's COPY text format: the statement, a stream of rows for copy_expert, and rows read back."""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

import orjson

from reference.collector.validate import COLUMNS

COPY_SQL = f"COPY logs ({', '.join(COLUMNS)}) FROM STDIN"
# psycopg2 reads the COPY data in pieces of this size and takes the GIL back after each: with its default
# of 8 KiB the parsing thread slowed a 10k-row COPY from 0.10 s to 0.35-0.40 s; with 1 MiB, 0.16-0.28 s, and
# the collector went from 65.3k to 74.2k rows/s end to end (4 interleaved runs, loadtests/bench).
COPY_READ_BYTES = 1024 * 1024
NULL = b"\\N"
# Backslash sequences of the text format (https://www.postgresql.org/docs/current/sql-copy.html).
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


class RowStream:
    """A file-like object over a list of rows, so COPY reads them in pieces without one joined copy in memory."""

    def __init__(self, rows: list[bytes]) -> None:
        self._rows = rows
        # Where each row ends in the joined stream: a read finds its last row by bisection and joins its rows with
        # one bytes.join, all in C. Looping over the rows in Python (and copying the rest of the list on every
        # read) cost 1,880 instructions a 430-byte row against 1,100 this way (callgrind, 10,000-row batches read
        # in COPY_READ_BYTES pieces); the writer thread's COPY went from 0.74 to 0.61 us of CPU a row.
        self._ends = list(accumulate(map(len, rows)))
        self._next = 0

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes of whole rows (at least one row when any is left; b"" at the end)."""
        start = self._next
        if start >= len(self._rows):
            return b""
        if size < 0:
            end = len(self._rows)
        else:
            before = self._ends[start - 1] if start else 0
            end = max(start + 1, bisect_right(self._ends, before + size, start))
        self._next = end
        return b"".join(self._rows[start:end])

    def readline(self, size: int = -1) -> bytes:
        """The next row (the file protocol psycopg2's stubs ask for; COPY FROM only calls read)."""
        return self.read(0)


def _unescape(match: re.Match[bytes]) -> bytes:
    octal, hexa, char = match.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _SIMPLE.get(char, char)


def decode_field(text: bytes) -> bytes | None:
    """One column of a text-format row as its value's bytes (None for \\N)."""
    if text == NULL:
        return None
    return _ESCAPE.sub(_unescape, text) if b"\\" in text else text


def row_as_event(row: bytes) -> bytes:
    """Rebuild a JSON line from one logs row: the same fields and values, compact, keys in column order.

    Used for the rare row PostgreSQL refuses after the line passed validation, so the collector keeps one copy of
    each line (its row) instead of the raw line beside it.
    """
    fields = [decode_field(f) for f in row.rstrip(b"\n").split(b"\t")]
    if len(fields) != len(COLUMNS):
        return row  # not a row of ours: keep it as it is rather than guess
    parts = []
    for name, value in zip(COLUMNS, fields, strict=True):
        if name == "data":
            encoded = b"null" if value is None else value
        else:
            encoded = orjson.dumps(value.decode("utf-8", "replace") if value is not None else None)
        parts.append(orjson.dumps(name) + b":" + encoded)
    return b"{" + b",".join(parts) + b"}"
