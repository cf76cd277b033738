"""The collector's journal: offsets that survive restarts, reads across segments, trimming, splice from a FIFO."""

from __future__ import annotations

import os

import pytest

from reference.collector import journal as journal_module
from reference.collector.journal import Journal, JournalError


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of 100 bytes, so a few appends rotate."""
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 100)


class TestJournal:
    def test_offsets_continue_after_reopening(self, tmp_path):
        """A reopened journal ends where the last one stopped and keeps its id."""
        j = Journal(tmp_path)
        j.append(b"hello\n")
        first_id = j.id
        j.close()
        j = Journal(tmp_path)
        assert (j.end, j.id) == (6, first_id)
        j.append(b"world\n")
        assert j.read(0, 100) == b"hello\nworld\n"
        j.close()

    def test_reads_cross_segments_one_at_a_time(self, tmp_path, small_segments):
        """Bytes written across several segments read back whole and in order."""
        j = Journal(tmp_path)
        data = bytes(range(256)) * 3
        for k in range(0, len(data), 60):
            j.append(data[k : k + 60])
        out, offset = b"", 0
        while offset < j.end:
            piece = j.read(offset, 1000)
            assert piece
            out += piece
            offset += len(piece)
        assert out == data
        assert len(list(tmp_path.glob("segment-*.log"))) > 3
        j.close()

    def test_trim_removes_only_fully_committed_segments(self, tmp_path, small_segments):
        """Trimming keeps the segment holding the committed offset and everything after it."""
        j = Journal(tmp_path)
        for _ in range(5):
            j.append(b"x" * 100)
        j.append(b"y")
        j.trim(250)
        assert j.start == 200
        assert j.read(250, 10) == b"x" * 10
        with pytest.raises(JournalError, match="trimmed"):
            j.read(10, 10)
        j.close()

    def test_splice_moves_pipe_bytes_into_the_journal(self, tmp_path):
        """splice_from empties the pipe into the journal and returns 0 when nothing waits."""
        fifo = tmp_path / "f"
        os.mkfifo(fifo)
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            j = Journal(tmp_path / "j")
            os.write(w, b"line one\nline two\n")
            assert j.splice_from(r, 1 << 20) == 18
            assert j.splice_from(r, 1 << 20) == 0
            assert j.read(0, 100) == b"line one\nline two\n"
            j.close()
        finally:
            os.close(r)
            os.close(w)

    def test_a_folder_that_cannot_be_created_is_refused(self, tmp_path):
        """A journal path below a regular file gives a clear error."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(JournalError, match="cannot create the journal folder"):
            Journal(blocker / "journal")
