"""Where the collector's bytes come from: the FIFO itself, or the FIFO through a journal on disk."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from reference.collector.journal import Journal, JournalError
from reference.collector.reader import READ_CHUNK_BYTES, FifoReader

log = logging.getLogger(__name__)

# With the journal full, look this often whether loading has freed room (20 wake-ups a second while stopped).
JOURNAL_FULL_WAKE_S = 0.05


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of the stream, and with a journal the stream offset just past them."""

    data: bytes
    end: int | None = None


class Source(Protocol):
    """A byte stream read in chunks; the collector cuts it into lines."""

    path: str
    capacity: int
    # True when the source keeps what it took in on disk: the collector may then parse at the sink's pace, and
    # lines not yet committed at shutdown are kept for the next start instead of being waited for.
    durable: bool
    journal_id: str | None
    taken: int  # bytes taken from the pipe so far

    def wait(self, timeout: float) -> None:
        """Wait up to timeout seconds for new bytes and take in what came (a journal stores it at once)."""

    @property
    def backlog(self) -> int:
        """Bytes taken in but not handed out yet."""

    @property
    def ready(self) -> bool:
        """True when next_chunk may be called (a journal first needs to know where to replay from)."""

    @property
    def start(self) -> int | None:
        """The offset the first chunk starts at, once ready (None without a journal)."""

    def next_chunk(self) -> Chunk | None:
        """Up to one read's worth of bytes, in stream order; None when nothing is there right now."""

    def start_at(self, committed: int) -> None:
        """Hand out bytes from this committed offset on (a journal replays what the database does not have)."""

    def committed(self, offset: int) -> None:
        """Everything before offset is in the database: a journal may delete it."""

    def close_door(self) -> bool:
        """At a stop: only writers that have the FIFO open reach it from now on; False when not possible."""

    @property
    def writers_gone(self) -> bool:
        """True once, after close_door, the FIFO's writers have all closed it and it is empty."""

    def seal(self) -> None:
        """Take in everything the pipe holds and close the FIFO at once: no write succeeds that is not taken in."""

    @property
    def waiting(self) -> int:
        """Bytes in the pipe not taken in yet."""

    def describe(self) -> str:
        """Where the bytes go, for the start-up log line."""

    def stats(self) -> str:
        """Extra fields for the stats line (empty when none)."""

    def close(self) -> None:
        """Release everything."""


class FifoSource:
    """The FIFO read straight into memory: without a journal, the pipe itself is the only buffer."""

    durable = False
    journal_id: str | None = None

    def __init__(self, reader: FifoReader) -> None:
        self.reader = reader
        self.path = reader.path
        self.capacity = reader.capacity
        self._sealed: list[bytes] = []  # what the pipe held when sealed, handed out after the FIFO is closed
        self._open = True
        self.taken = 0

    def wait(self, timeout: float) -> None:
        """Wait for bytes; they stay in the pipe until next_chunk reads them (back-pressure onto the writers)."""
        if self._open:
            self.reader.wait(timeout)

    @property
    def backlog(self) -> int:
        """Bytes read at the seal and not handed out yet."""
        return sum(len(c) for c in self._sealed)

    ready = True
    start = None

    def next_chunk(self) -> Chunk | None:
        """What the pipe holds now (up to one read), or the next piece of what it held when sealed."""
        if self._sealed:
            return Chunk(self._sealed.pop(0))
        if not self._open:
            return None
        data = self.reader.read(0)
        self.taken += len(data)
        return Chunk(data) if data else None

    def start_at(self, committed: int) -> None:
        """Nothing to replay without a journal."""

    def committed(self, offset: int) -> None:
        """Nothing to trim without a journal."""

    def close_door(self) -> bool:
        """Send new writers to a stand-in FIFO (reader.py)."""
        return self._open and self.reader.close_door()

    @property
    def writers_gone(self) -> bool:
        """The FIFO is empty and writerless."""
        return not self._open or self.reader.writers_gone()

    def seal(self) -> None:
        """Read what the pipe holds, then close the FIFO before anything slow happens."""
        if not self._open:
            return
        data = self.reader.read_available()
        self.reader.open_door()  # a FIFO that writers still hold goes back to the path: read once more
        data += self.reader.read_available()
        self.reader.close()
        self._open = False
        self.taken += len(data)
        if data:
            self._sealed.append(data)

    @property
    def waiting(self) -> int:
        """Bytes in the pipe (0 once sealed)."""
        return self.reader.waiting() if self._open else 0

    def describe(self) -> str:
        """No journal."""
        return ""

    def stats(self) -> str:
        """No extra fields."""
        return ""

    def close(self) -> None:
        """Close the FIFO if still open."""
        if self._open:
            self.reader.close()
            self._open = False


class JournaledSource:
    """The FIFO spliced into a journal the moment bytes arrive; chunks are read back from the journal."""

    durable = True

    def __init__(self, reader: FifoReader, journal: Journal) -> None:
        self.reader = reader
        self.journal = journal
        self.journal_id: str | None = journal.id
        self.path = reader.path
        self.capacity = reader.capacity
        self._parsed_to: int | None = None  # offset handed out so far; known once the database said where to start
        self._open = True
        self.taken = 0

    def wait(self, timeout: float) -> None:
        """Wait for bytes and move them into the journal; a full journal leaves them in the pipe (back-pressure)."""
        if not self._open:
            return
        if self.journal.room() == 0:  # disk full or at --journal-max-bytes: writers wait until loading frees room
            self.reader.check_path()  # a removed FIFO is noticed while the journal is full too
            time.sleep(min(timeout, JOURNAL_FULL_WAKE_S))
        elif self.reader.wait(timeout):
            self.taken += self.journal.splice_from(self.reader.fd, READ_CHUNK_BYTES)
        self._take_retired()

    def _take_retired(self) -> None:
        """Journal the whole lines of a FIFO that was removed or replaced and is still read (reader.py)."""
        if not (self.reader.retiring and self.journal.room()):
            return
        extra = self.reader.take_retired(aligned=self.journal.ends_with_newline())
        written = self.journal.append(extra) if extra else 0
        self.reader.give_back(extra[written:])
        self.taken += written

    @property
    def backlog(self) -> int:
        """Journaled bytes not handed out yet (all of them until the replay start is known)."""
        parsed = self._parsed_to if self._parsed_to is not None else self.journal.start
        return self.journal.end - parsed

    @property
    def ready(self) -> bool:
        """True once start_at gave the replay offset."""
        return self._parsed_to is not None

    @property
    def start(self) -> int | None:
        """The replay offset."""
        return self._parsed_to

    def start_at(self, committed: int) -> None:
        """Replay from the offset the database has committed; refuse a journal that does not match it."""
        journal = self.journal
        if committed > journal.end or committed < journal.start:
            raise JournalError(
                f"the database has journal {journal.id} committed up to offset {committed}, but {journal.folder} "
                f"holds {journal.start}..{journal.end}: the folder was replaced or the database restored. Give an "
                "empty --journal folder to start afresh (its unloaded bytes are then not loaded), or use the "
                "database and folder that belong together"
            )
        if committed < journal.end:
            log.warning(
                "replaying %d journaled bytes not yet committed (offset %d..%d)",
                journal.end - committed,
                committed,
                journal.end,
            )
        self._parsed_to = committed

    def next_chunk(self) -> Chunk | None:
        """The next read's worth of journaled bytes, with the offset just past them."""
        if self._parsed_to is None or self._parsed_to >= self.journal.end:
            return None
        data = self.journal.read(self._parsed_to, READ_CHUNK_BYTES)
        if not data:
            return None
        self._parsed_to += len(data)
        return Chunk(data, self._parsed_to)

    def committed(self, offset: int) -> None:
        """Delete the segments the database holds every byte of."""
        self.journal.trim(offset)

    def close_door(self) -> bool:
        """Send new writers to a stand-in FIFO (reader.py); not with the journal full, whose bytes wait in the pipe."""
        return self._open and self.journal.room() > 0 and self.reader.close_door()

    @property
    def writers_gone(self) -> bool:
        """The FIFO is empty and writerless."""
        return not self._open or self.reader.writers_gone()

    def seal(self) -> None:
        """Splice what the pipe holds into the journal, then close the FIFO."""
        if not self._open:
            return
        self._splice_waiting()
        self.reader.open_door()  # a FIFO that writers still hold goes back to the path: take in once more
        self._splice_waiting()
        left = self.reader.waiting()
        if left:
            log.warning(
                "%d bytes stay in the pipe at the stop, the journal being full: a writer that keeps the FIFO open "
                "hands them to the next collector, one that closes it loses them",
                left,
            )
        while self.reader.retiring and self.journal.room():
            before = self.taken
            self._take_retired()
            if self.taken == before:
                break
        self.reader.close()
        self._open = False

    def _splice_waiting(self) -> None:
        while self.reader.waiting() > 0 and (moved := self.journal.splice_from(self.reader.fd, READ_CHUNK_BYTES)):
            self.taken += moved

    @property
    def waiting(self) -> int:
        """Bytes in the pipe (0 once sealed)."""
        return self.reader.waiting() if self._open else 0

    def describe(self) -> str:
        """The journal folder and its end."""
        return f", journal {self.journal.folder} at offset {self.journal.end}"

    def stats(self) -> str:
        """How far parsing lags behind the journal."""
        return f" journal_backlog_bytes={self.backlog}"

    def close(self) -> None:
        """Close the FIFO and the journal."""
        if self._open:
            self.reader.close()
            self._open = False
        self.journal.close()
