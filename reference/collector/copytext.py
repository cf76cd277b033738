"""PostgreSQL's COPY text format: the statement, a stream of rows for copy_expert, and rows read back."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
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

    def __init__(self, rows: list[bytes], cuts: Sequence[tuple[int, int]] | None = None) -> None:
        """cuts: (rows, bytes) at the places a piece may end (Batch.cuts, in order); None: after every row."""
        self._rows = rows
        if cuts is None:
            cut_rows: list[int] = list(range(1, len(rows) + 1))
            cut_bytes = list(accumulate(map(len, rows)))
        else:
            cut_rows = [count for count, _ in cuts]
            cut_bytes = [length for _, length in cuts]
            done = cut_rows[-1] if cut_rows else 0
            if done < len(rows):  # rows past the last cut: one more cut at the end
                cut_bytes.append((cut_bytes[-1] if cut_bytes else 0) + sum(map(len, rows[done:])))
                cut_rows.append(len(rows))
        # A read bisects the byte offsets of the cuts and joins its rows with one bytes.join, all in C. In the writer
        # thread the rows are no longer in the CPU's caches: looping over them in Python (and copying the rest of
        # the list on every read) cost 0.36 us a row, measuring each row there 0.40, the batch's cuts at read
        # boundaries 0.19, the joins alone being 0.13 (docs/performance.md, "Outside the parser").
        self._cut_rows = cut_rows
        self._cut_bytes = cut_bytes
        self._cut = 0  # the first cut past the rows handed out
        self._next = 0  # the first row not handed out
        self._taken = 0  # the bytes handed out

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes of whole rows (at least one row when any is left; b"" at the end)."""
        rows, start = self._rows, self._next
        if start >= len(rows):
            return b""
        if size < 0:
            end = len(rows)
        else:
            last = bisect_right(self._cut_bytes, self._taken + size, self._cut) - 1
            if last >= self._cut:
                end = self._cut_rows[last]
            else:  # the rows up to the next cut are more than size bytes: cut among them
                ends = list(accumulate(map(len, rows[start : self._cut_rows[self._cut]])))
                end = start + max(1, bisect_right(ends, size))
        piece = b"".join(rows[start:end])
        self._next = end
        self._taken += len(piece)
        self._cut = bisect_right(self._cut_rows, end, self._cut)
        return piece

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
