"""The journal and the FIFO against other local users, a second collector, and a full journal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reference.collector import journal as journal_module
from reference.collector import reader as reader_module
from reference.collector.journal import Journal, JournalError
from reference.collector.reader import FifoBusyError, FifoReader
from reference.fifo import FifoPermissionError, NotAFifoError, open_fifo_for_reading
from reference.fifo_writer import FifoWriter

NOBODY_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask():
    """A umask of 000, as a careless service manager might set it."""
    old = os.umask(0)
    yield
    os.umask(old)


class TestJournalModes:
    """The journal folder is 0700 and its files 0600 from their creation, whatever the umask."""

    def test_new_folder_and_files_are_private(self, tmp_path, open_umask):
        """A new journal: folder 0700; journal-id, lock and every segment 0600, also after a rotation."""
        folder = tmp_path / "journal"
        j = Journal(folder, max_bytes=4 * journal_module.MIN_SEGMENT_BYTES)
        j.append(b"x" * (journal_module.MIN_SEGMENT_BYTES + 10))  # rotates once
        j.close()
        assert mode_of(folder) == 0o700
        files = list(folder.iterdir())
        assert len([f for f in files if f.name.startswith("segment-")]) == 2
        assert {f.name: mode_of(f) for f in files} == {f.name: 0o600 for f in files}

    def test_a_folder_others_can_write_is_refused(self, tmp_path):
        """A group- or world-writable journal folder is refused with the chmod that fixes it."""
        folder = tmp_path / "journal"
        folder.mkdir()
        folder.chmod(0o777)
        with pytest.raises(JournalError, match="chmod 700"):
            Journal(folder)

    @needs_root
    def test_a_folder_of_another_user_is_refused(self, tmp_path):
        """A journal folder owned by another user is refused, naming its owner."""
        folder = tmp_path / "journal"
        folder.mkdir(mode=0o700)
        os.chown(folder, NOBODY_UID, NOBODY_UID)
        with pytest.raises(JournalError, match=f"belongs to uid {NOBODY_UID}"):
            Journal(folder)

    def test_a_symlinked_segment_is_not_followed(self, tmp_path):
        """A segment name planted as a symlink is not opened through (the target stays untouched)."""
        folder = tmp_path / "journal"
        folder.mkdir(mode=0o700)
        target = tmp_path / "victim"
        target.write_text("precious")
        (folder / "segment-00000000000000000000.log").symlink_to(target)
        with pytest.raises(JournalError, match="cannot open the journal"):
            Journal(folder)
        assert target.read_text() == "precious"


class TestJournalLock:
    """One journal folder, one collector."""

    def test_a_second_journal_on_the_folder_is_refused_naming_the_holder(self, tmp_path):
        """The second open fails with the first holder's pid; after close the folder is free again."""
        first = Journal(tmp_path / "j")
        with pytest.raises(JournalError, match=f"in use by another collector \\(pid {os.getpid()}"):
            Journal(tmp_path / "j")
        first.close()
        Journal(tmp_path / "j").close()


class TestFifoLock:
    """One FIFO, one reader: a second reader would split lines between the two."""

    def test_a_second_reader_is_refused_naming_the_holder(self, tmp_path):
        """A second FifoReader on the same path fails with the holder's pid."""
        first = FifoReader(str(tmp_path / "f"), mode=0o600)
        try:
            with pytest.raises(FifoBusyError, match=f"pid {os.getpid()}"):
                FifoReader(str(tmp_path / "f"), mode=0o600)
        finally:
            first.close()
        FifoReader(str(tmp_path / "f"), mode=0o600).close()


class TestJournalLimit:
    """max_bytes bounds the disk the journal takes; a full journal leaves the bytes in the pipe."""

    def test_splice_stops_at_the_limit_and_resumes_after_a_trim(self, tmp_path):
        """At max_bytes nothing more leaves the pipe; trimming committed segments makes room again."""
        limit = 4 * journal_module.MIN_SEGMENT_BYTES
        fifo = tmp_path / "f"
        os.mkfifo(fifo, 0o600)
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            j = Journal(tmp_path / "j", max_bytes=limit)
            line = b"y" * 1023 + b"\n"
            moved = 0
            for _ in range(limit // 1024 + 64):
                while True:
                    try:
                        os.write(w, line)
                        break
                    except BlockingIOError:
                        assert j.splice_from(r, 1 << 20) or j.room() == 0
                        if j.room() == 0:
                            break
                if j.room() == 0:
                    break
            moved = j.end
            assert moved == limit
            assert j.disk_bytes == limit
            assert j.full
            os.write(w, line)
            assert j.splice_from(r, 1 << 20) == 0  # the rest stays in the pipe
            j.trim(journal_module.MIN_SEGMENT_BYTES * 2)
            assert j.room() == 2 * journal_module.MIN_SEGMENT_BYTES
            assert j.splice_from(r, 1 << 20) > 0
            j.close()
        finally:
            os.close(r)
            os.close(w)

    def test_the_open_segment_is_trimmed_once_committed_while_full(self, tmp_path):
        """A journal full inside its only segment frees it once every byte is committed."""
        j = Journal(tmp_path / "j", max_bytes=journal_module.MIN_SEGMENT_BYTES)
        assert j.append(b"z" * (2 * journal_module.MIN_SEGMENT_BYTES)) == journal_module.MIN_SEGMENT_BYTES
        assert j.room() == 0
        j.trim(j.end)
        assert (j.disk_bytes, j.start, j.end) == (0, journal_module.MIN_SEGMENT_BYTES, journal_module.MIN_SEGMENT_BYTES)
        assert j.room() == journal_module.MIN_SEGMENT_BYTES
        assert sorted(p.name for p in (tmp_path / "j").glob("segment-*")) == [
            f"segment-{journal_module.MIN_SEGMENT_BYTES:020d}.log"
        ]
        j.close()


class TestFifoOwnership:
    """An existing FIFO must be ours (or root's) and no more open than --fifo-mode."""

    def test_a_new_fifo_gets_exactly_the_mode(self, tmp_path, open_umask):
        """Created with mkfifo, set with fchmod: the mode is exactly the one asked for."""
        os.close(open_fifo_for_reading(tmp_path / "f", 0o620))
        assert mode_of(tmp_path / "f") == 0o620

    def test_a_fifo_more_open_than_the_mode_is_refused(self, tmp_path):
        """A 0666 FIFO with --fifo-mode 600 is refused, naming the chmod that fixes it."""
        os.mkfifo(tmp_path / "f")
        os.chmod(tmp_path / "f", 0o666)
        with pytest.raises(FifoPermissionError, match="chmod 600"):
            open_fifo_for_reading(tmp_path / "f", 0o600)

    @needs_root
    def test_a_fifo_of_another_user_is_refused(self, tmp_path):
        """A FIFO planted by another user is refused even with a narrow mode."""
        os.mkfifo(tmp_path / "f", 0o600)
        os.chown(tmp_path / "f", NOBODY_UID, NOBODY_UID)
        with pytest.raises(FifoPermissionError, match=f"belongs to uid {NOBODY_UID}"):
            open_fifo_for_reading(tmp_path / "f", 0o600)

    def test_a_symlink_to_a_fifo_is_refused(self, tmp_path):
        """The path must be the FIFO itself, not a link someone could redirect."""
        os.mkfifo(tmp_path / "real", 0o600)
        (tmp_path / "f").symlink_to(tmp_path / "real")
        with pytest.raises(NotAFifoError, match="symbolic link"):
            open_fifo_for_reading(tmp_path / "f", 0o600)


class TestFifoReplaced:
    """A FIFO removed while read is recreated; the old one is read until its writers are gone."""

    def test_removed_fifo_is_recreated_and_both_are_read(self, tmp_path, monkeypatch):
        """Lines of an old writer and of a new one both come out whole; the old FIFO is closed at its EOF."""
        monkeypatch.setattr(reader_module, "PATH_CHECK_S", 0.0)
        path = tmp_path / "f"
        reader = FifoReader(str(path), mode=0o600)
        old_writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.unlink(path)
            reader.check_path()
            assert stat.S_ISFIFO(os.lstat(path).st_mode)
            new_writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(old_writer, b"old 1\nold 2\n")
            os.write(new_writer, b"new 1\n")
            os.close(old_writer)
            old_writer = -1
            got = b""
            for _ in range(10):
                got += reader.read(0.05)
            assert sorted(got.splitlines()) == [b"new 1", b"old 1", b"old 2"]
            assert not reader.retiring
            os.close(new_writer)
        finally:
            if old_writer >= 0:
                os.close(old_writer)
            reader.close()

    def test_a_writer_refuses_a_regular_file_at_the_path(self, tmp_path):
        """The emitter's writer opens the path and refuses what is not a FIFO."""
        (tmp_path / "f").write_text("")
        writer = FifoWriter(str(tmp_path / "f"))
        with pytest.raises(NotAFifoError, match="regular file"):
            writer.open()
        assert (tmp_path / "f").read_text() == ""


class TestFifoReplacedByOthers:
    """What takes the FIFO's place is never deleted, and never read unless it passes the FIFO checks."""

    def test_a_regular_file_at_the_path_is_logged_and_left_alone(self, tmp_path, monkeypatch, caplog):
        """The FIFO replaced by a regular file: one error line, the file untouched, the old FIFO still read."""
        monkeypatch.setattr(reader_module, "PATH_CHECK_S", 0.0)
        path = tmp_path / "f"
        reader = FifoReader(str(path), mode=0o600)
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.unlink(path)
            path.write_bytes(b"someone's file\n")
            reader.check_path()
            reader.check_path()
            assert [r.levelname for r in caplog.records if "regular file" in r.getMessage()] == ["ERROR"]
            assert path.read_bytes() == b"someone's file\n"
            os.write(writer, b"still read\n")
            assert reader.read(0.5) == b"still read\n"
        finally:
            os.close(writer)
            reader.close()

    @needs_root
    def test_a_fifo_of_another_user_at_the_path_is_not_taken_over(self, tmp_path, monkeypatch, caplog):
        """The FIFO replaced by another user's FIFO: logged, not read; the old FIFO still is."""
        monkeypatch.setattr(reader_module, "PATH_CHECK_S", 0.0)
        path = tmp_path / "f"
        reader = FifoReader(str(path), mode=0o600)
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.unlink(path)
            os.mkfifo(path, 0o600)
            os.chown(path, NOBODY_UID, NOBODY_UID)
            reader.check_path()
            assert any(f"belongs to uid {NOBODY_UID}" in r.getMessage() for r in caplog.records)
            os.write(writer, b"old one\n")
            assert reader.read(0.5) == b"old one\n"
            assert not reader.retiring
        finally:
            os.close(writer)
            reader.close()
