"""The stop's door (reader.py): at a stop only writers that have the FIFO open reach it, and nothing is freed."""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
from pathlib import Path

import pytest

from reference.collector.reader import FifoReader, stand_in_path
from reference.fifo import exchange_paths

MODE = 0o620
ACL_XATTR = "system.posix_acl_access"
# The kernel's binary ACL: version 2, then (tag, permissions, id) entries: user::rw-, user:nobody:-w-, group::---,
# mask::-w-, other::---.
WRITE_ACL_FOR_NOBODY = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perms, ident)
    for tag, perms, ident in [
        (0x01, 6, 0xFFFFFFFF),
        (0x02, 2, 65534),
        (0x04, 0, 0xFFFFFFFF),
        (0x10, 2, 0xFFFFFFFF),
        (0x20, 0, 0xFFFFFFFF),
    ]
)


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    return str(tmp_path / "app.fifo")


def open_writer(path: str) -> int:
    """A non-blocking write end, as the emitter and the harness's client open it."""
    return os.open(path, os.O_WRONLY | os.O_NONBLOCK)


def inode(path: str | Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def read_all(reader: FifoReader) -> bytes:
    return reader.read_available()


class TestExchangePaths:
    """exchange_paths swaps two paths in one step, or raises like os.rename."""

    def test_swaps_a_fifo_and_a_directory(self, tmp_path):
        """Both names exist before and after; what they lead to is swapped."""
        a, b = tmp_path / "a", tmp_path / "b"
        os.mkfifo(a)
        b.mkdir()
        exchange_paths(a, b)
        assert a.is_dir()
        assert stat.S_ISFIFO(os.lstat(b).st_mode)

    def test_missing_path_raises_file_not_found(self, tmp_path):
        """A missing side is an error, not a plain rename."""
        os.mkfifo(tmp_path / "a")
        with pytest.raises(FileNotFoundError):
            exchange_paths(tmp_path / "a", tmp_path / "missing")
        assert stat.S_ISFIFO(os.lstat(tmp_path / "a").st_mode)


class TestCloseDoor:
    """After close_door the path leads to a stand-in with the FIFO's mode, and only old writers reach the FIFO."""

    def test_new_writers_meet_the_readerless_stand_in(self, fifo):
        """A non-blocking open of the path fails with ENXIO (no reader), as when no collector runs."""
        reader = FifoReader(fifo, mode=MODE)
        try:
            before = inode(fifo)
            assert reader.close_door()
            assert inode(fifo) != before
            assert stat.S_IMODE(os.lstat(fifo).st_mode) == MODE
            assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
            with pytest.raises(OSError, match="No such device or address") as caught:
                open_writer(fifo)
            assert caught.value.errno == errno.ENXIO
        finally:
            reader.close()

    def test_old_writer_is_read_until_it_closes(self, fifo):
        """A writer that opened before the stop keeps writing into the FIFO read; its close ends the wait."""
        reader = FifoReader(fifo, mode=MODE)
        writer = open_writer(fifo)
        try:
            assert reader.close_door()
            os.write(writer, b"after the stop\n")
            assert not reader.writers_gone()
            assert read_all(reader) == b"after the stop\n"
            assert not reader.writers_gone()  # still open: it may write again
            os.write(writer, b"again\n")
            os.close(writer)
            writer = -1
            assert not reader.writers_gone()  # closed, but its last bytes are unread
            assert read_all(reader) == b"again\n"
            assert reader.writers_gone()
        finally:
            if writer >= 0:
                os.close(writer)
            reader.close()

    def test_a_clean_stop_puts_the_same_fifo_back(self, fifo):
        """The FIFO's inode is back at the path (hard links, bind mounts, ACLs keep working), the stand-in beside
        it until the next collector reads it to the end and removes it."""
        reader = FifoReader(fifo, mode=MODE)
        original = inode(fifo)
        assert reader.close_door()
        assert reader.writers_gone()
        reader.open_door()
        reader.close()
        assert inode(fifo) == original
        assert stand_in_path(fifo).exists()
        with pytest.raises(OSError, match="No such device or address"):
            open_writer(fifo)  # no reader: writers wait for the next collector
        nxt = FifoReader(fifo, mode=MODE)
        try:
            assert nxt.read(0.1) == b""
            assert not stand_in_path(fifo).exists()
        finally:
            nxt.close()

    def test_acls_are_copied_to_the_stand_in(self, fifo):
        """A writer an ACL admits meets the same rights on the stand-in during the stop."""
        reader = FifoReader(fifo, mode=MODE)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            try:
                os.setxattr(fd, ACL_XATTR, WRITE_ACL_FOR_NOBODY)
            except OSError as exc:
                pytest.skip(f"no POSIX ACLs on this file system: {exc.strerror}")
            assert reader.close_door()
            stand_in = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            try:
                assert os.getxattr(stand_in, ACL_XATTR) == WRITE_ACL_FOR_NOBODY
            finally:
                os.close(stand_in)
        finally:
            os.close(fd)
            reader.close()

    def test_writers_that_stay_get_the_fifo_back_and_keep_their_bytes(self, fifo):
        """Past the wait, a FIFO a writer still holds goes back to the path: what it wrote after the final read
        is read by the next collector, as long as the writer keeps it open."""
        reader = FifoReader(fifo, mode=MODE)
        original = inode(fifo)
        writer = open_writer(fifo)
        try:
            assert reader.close_door()
            assert read_all(reader) == b""
            reader.open_door()
            assert inode(fifo) == original
            assert stand_in_path(fifo).exists()
            reader.close()
            # The write between the final read and the close: the pipe keeps it while the writer holds it open.
            with pytest.raises(BrokenPipeError):
                os.write(writer, b"too late\n")
            nxt = FifoReader(fifo, mode=MODE)
            try:
                assert nxt.read(0.1) == b""
                assert not stand_in_path(fifo).exists()  # the next collector read it to the end
                assert inode(fifo) == original
            finally:
                nxt.close()
        finally:
            os.close(writer)

    def test_a_write_after_the_final_read_waits_for_the_next_collector(self, fifo):
        """The writer that kept the FIFO open wrote between the final read and the close: the next reader gets it."""
        reader = FifoReader(fifo, mode=MODE)
        writer = open_writer(fifo)
        try:
            assert reader.close_door()
            reader.open_door()
            assert read_all(reader) == b""
            os.write(writer, b"between the final read and the close\n")
            reader.close()
            nxt = FifoReader(fifo, mode=MODE)
            try:
                assert read_all(nxt) == b"between the final read and the close\n"
            finally:
                nxt.close()
        finally:
            os.close(writer)

    def test_blocked_opener_of_the_stand_in_is_read_by_the_next_collector(self, fifo):
        """`echo line > fifo` during the wait blocks in open(); the next collector lets it go on and reads it."""
        reader = FifoReader(fifo, mode=MODE)
        holder = open_writer(fifo)  # keeps the FIFO past the wait, so the stand-in ends up beside the path
        done = threading.Event()

        def blocking_writer() -> None:
            fd = os.open(fifo, os.O_WRONLY)  # blocks: the stand-in has no reader
            os.write(fd, b"from the stand-in\n")
            os.close(fd)
            done.set()

        thread = threading.Thread(target=blocking_writer, daemon=True)
        try:
            assert reader.close_door()
            thread.start()
            assert not done.wait(0.3)
            reader.open_door()
            reader.close()
            nxt = FifoReader(fifo, mode=MODE)
            try:
                assert done.wait(5), "the writer blocked on the stand-in was not let go"
                got = b""
                for _ in range(50):
                    got += nxt.read(0.1)
                    if got:
                        break
                assert got == b"from the stand-in\n"
            finally:
                nxt.close()
        finally:
            os.close(holder)
            thread.join(5)

    def test_a_failed_start_leaves_the_stand_in_and_its_bytes(self, fifo):
        """A start that fails after taking the stand-in over does not remove it: its writer's bytes are read later."""
        parked = stand_in_path(fifo)
        os.mkfifo(parked, MODE)
        holder = os.open(parked, os.O_RDONLY | os.O_NONBLOCK)
        writer = open_writer(str(parked))
        os.write(writer, b"written during the last stop\n")
        os.close(holder)  # the bytes live on while the writer keeps it open
        Path(fifo).write_text("not a FIFO")
        try:
            with pytest.raises(FileExistsError, match="not a FIFO"):
                FifoReader(fifo, mode=MODE)
            assert parked.exists()
            os.unlink(fifo)
            reader = FifoReader(fifo, mode=MODE)
            try:
                assert reader.read(0.1) == b"written during the last stop\n"
                os.close(writer)
                writer = -1
                assert reader.read(0.1) == b""
                assert not parked.exists()  # read to the end: removed
            finally:
                reader.close()
        finally:
            if writer >= 0:
                os.close(writer)

    def test_door_cannot_close_on_a_removed_fifo_path_but_eof_still_comes(self, fifo):
        """A FIFO removed from its path is reached by no new writer: the wait ends when its writers are gone."""
        reader = FifoReader(fifo, mode=MODE)
        writer = open_writer(fifo)
        os.unlink(fifo)
        try:
            assert reader.close_door()
            assert not os.path.lexists(fifo)
            assert not reader.writers_gone()
            os.close(writer)
            writer = -1
            assert reader.writers_gone()
        finally:
            if writer >= 0:
                os.close(writer)
            reader.close()

    def test_a_planted_stand_in_path_is_refused_without_harm(self, fifo):
        """Something already at the stand-in path: no swap (the stop falls back to read-and-close), nothing removed."""
        reader = FifoReader(fifo, mode=MODE)
        planted = stand_in_path(fifo)
        planted.write_text("not mine")
        try:
            assert not reader.close_door()
            assert planted.read_text() == "not mine"
            assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        finally:
            reader.close()
            planted.unlink()
