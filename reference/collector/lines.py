"""Split a byte stream read in chunks into whole lines, keeping partial tails and bounding line length."""

from __future__ import annotations

from dataclasses import dataclass, field

# A rejected over-long line keeps this many of its first bytes in logs_rejected: enough to identify the
# writer and the event, while one hostile line without a newline cannot fill the database or the memory.
REJECTED_PREFIX_BYTES = 64 * 1024


@dataclass
class Oversized:
    """A line longer than the limit: its length so far and its first bytes."""

    length: int
    prefix: bytes
    complete: bool = False


@dataclass
class LineSplitter:
    """Feed chunks in, get complete lines out; a line above max_line_bytes comes out as Oversized."""

    max_line_bytes: int
    _tail: bytearray = field(default_factory=bytearray)
    _oversized: Oversized | None = None

    def feed(self, chunk: bytes) -> tuple[list[bytes], list[Oversized]]:
        """Return the complete lines (without newline) the chunk finishes, and any over-long ones."""
        oversized: list[Oversized] = []
        if self._oversized is not None:
            end = chunk.find(b"\n")
            piece = chunk if end < 0 else chunk[:end]
            self._oversized.length += len(piece)
            room = REJECTED_PREFIX_BYTES - len(self._oversized.prefix)
            if room > 0:  # keep the first bytes whatever the read boundaries were
                self._oversized.prefix += piece[:room]
            if end < 0:
                return [], oversized
            self._oversized.complete = True
            oversized.append(self._oversized)
            self._oversized = None
            chunk = chunk[end + 1:]
        parts = chunk.split(b"\n")
        if self._tail:
            self._tail += parts[0]
            parts[0] = bytes(self._tail)
            self._tail.clear()
        tail = parts.pop()
        lines = []
        for line in parts:
            if len(line) > self.max_line_bytes:
                oversized.append(Oversized(len(line), line[:REJECTED_PREFIX_BYTES], complete=True))
            else:
                lines.append(line)
        if len(tail) > self.max_line_bytes:
            # Keep only the prefix and skip to the next newline: memory stays bounded whatever arrives.
            self._oversized = Oversized(len(tail), tail[:REJECTED_PREFIX_BYTES])
        else:
            self._tail += tail
        return lines, oversized

    @property
    def pending(self) -> int:
        """Bytes held back waiting for their newline."""
        if self._oversized is not None:
            return self._oversized.length
        return len(self._tail)

    def take_partial(self) -> bytes | Oversized | None:
        """At shutdown: hand over the unfinished line, if any, so it is rejected rather than lost."""
        if self._oversized is not None:
            partial, self._oversized = self._oversized, None
            return partial
        if self._tail:
            partial = bytes(self._tail)
            self._tail.clear()
            return partial
        return None
