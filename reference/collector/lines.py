"""Split a byte stream read in chunks into whole lines, keeping partial tails and bounding line length."""

from __future__ import annotations

from dataclasses import dataclass, field

from reference.collector.validate import glued_event

# A rejected over-long line keeps this many of its first bytes in logs_rejected: enough to identify the
# writer and the event, while one hostile line without a newline cannot fill the database or the memory.
REJECTED_PREFIX_BYTES = 64 * 1024


@dataclass
class Oversized:
    """A line longer than the limit: its length so far and its first bytes."""

    length: int
    prefix: bytes
    complete: bool = False


def _glued_tail(line: bytes | bytearray, limit: int) -> bytes:
    """The valid event that ends an over-long line (within its last `limit` bytes), or b"".

    A writer that died mid-line leaves its fragment glued before the next writer's line; when the fragment is
    over the limit, the line behind it is still whole within the last `limit` bytes, and goes on as a line.
    """
    window = line[-limit:]
    glued = glued_event(window)
    return b"" if glued is None else bytes(window[glued[0] :])


@dataclass
class LineSplitter:
    """Feed chunks in, get complete lines out; a line above max_line_bytes comes out as Oversized."""

    max_line_bytes: int
    _tail: bytearray = field(default_factory=bytearray)
    _oversized: Oversized | None = None
    # The last max_line_bytes bytes of the over-long line being skipped: where a glued good line would be.
    _window: bytearray = field(default_factory=bytearray)

    def _finish(self, too_long: Oversized, line: bytes | bytearray, lines: list[bytes]) -> Oversized:
        """Complete an over-long line whose last bytes are line; a line glued at its end goes to lines."""
        too_long.complete = True
        glued = _glued_tail(line, self.max_line_bytes)
        if glued:
            lines.append(glued)
            # The prefix stops where the glued part starts: no byte is rejected twice.
            too_long.prefix = too_long.prefix[: too_long.length - len(glued)]
        return too_long

    def feed(self, chunk: bytes) -> tuple[list[bytes], list[Oversized]]:
        """Return the complete lines (without newline) the chunk finishes, and any over-long ones.

        A line glued at the end of an over-long one (its last max_line_bytes bytes, from an object start on)
        comes out as a line of its own.
        """
        oversized: list[Oversized] = []
        lines: list[bytes] = []
        if self._oversized is not None:
            end = chunk.find(b"\n")
            piece = chunk if end < 0 else chunk[:end]
            self._oversized.length += len(piece)
            room = REJECTED_PREFIX_BYTES - len(self._oversized.prefix)
            if room > 0:  # keep the first bytes whatever the read boundaries were
                self._oversized.prefix += piece[:room]
            self._window += piece
            del self._window[: -self.max_line_bytes]
            if end < 0:
                return lines, oversized
            oversized.append(self._finish(self._oversized, self._window, lines))
            self._oversized = None
            self._window.clear()
            chunk = chunk[end + 1 :]
        parts = chunk.split(b"\n")
        if self._tail:
            self._tail += parts[0]
            parts[0] = bytes(self._tail)
            self._tail.clear()
        tail = parts.pop()
        if not parts or max(map(len, parts)) <= self.max_line_bytes:
            lines += parts  # the usual read: no line over the limit, found without a Python loop per line
        else:
            for line in parts:
                if len(line) > self.max_line_bytes:
                    oversized.append(self._finish(Oversized(len(line), line[:REJECTED_PREFIX_BYTES]), line, lines))
                else:
                    lines.append(line)
        if len(tail) > self.max_line_bytes:
            # Keep only the prefix and the last max_line_bytes bytes, and skip to the next newline: memory stays
            # bounded whatever arrives.
            self._oversized = Oversized(len(tail), tail[:REJECTED_PREFIX_BYTES])
            self._window += tail[-self.max_line_bytes :]
        else:
            self._tail += tail
        return lines, oversized

    def feed_block(self, chunk: bytes) -> tuple[bytes, int] | None:
        """feed's lines still joined, and how many (b"", 0 for none); None when a line may be over the limit.

        The usual read (no over-long line being skipped, the held tail and the chunk within the limit together)
        needs no split: the whole-read parser takes the lines as they came, one bytes object, not one per line.
        """
        if self._oversized is not None or len(self._tail) + len(chunk) > self.max_line_bytes:
            return None
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail += chunk
            return b"", 0
        block = bytes(self._tail + chunk[:end]) if self._tail else chunk[:end]
        self._tail.clear()
        self._tail += chunk[end + 1 :]
        # Newlines counted as the bytes replace removes: bytes.count(b"\n") scans byte by byte, 4-10x slower.
        return block, len(block) - len(block.replace(b"\n", b"")) + 1

    @property
    def pending(self) -> int:
        """Bytes held back waiting for their newline."""
        if self._oversized is not None:
            return self._oversized.length
        return len(self._tail)

    def take_partial(self) -> bytes | Oversized | None:
        """At shutdown: hand over the unfinished line, if any, so it is rejected rather than lost."""
        oversized = self._oversized
        if oversized is not None:
            self._oversized = None
            self._window.clear()
            return oversized
        if self._tail:
            partial = bytes(self._tail)
            self._tail.clear()
            return partial
        return None
