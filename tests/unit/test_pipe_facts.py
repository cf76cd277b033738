"""Linux FIFO behaviour, checked against the running kernel, and the pipefacts command that reports it."""

from __future__ import annotations

import errno
import json
import os
import select
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from reference import fifo, pipefacts
from reference.fifo import PIPE_BUF, ensure_fifo, get_pipe_size, pipe_max_size, set_pipe_size

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="these are Linux FIFO facts")

RD = os.O_RDONLY | os.O_NONBLOCK
WR = os.O_WRONLY | os.O_NONBLOCK
# How long a blocked writer is watched before the test calls it blocked.
BLOCK_PROBE_SECONDS = 0.2
# Bound for waits that succeed in milliseconds when the kernel behaves.
WAIT_SECONDS = 5.0


class Descriptors:
    """The descriptors one test opened; the fixture closes those still open."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def open(self, path: str, flags: int) -> int:
        """Open path with flags and remember the descriptor."""
        self.held.append(os.open(path, flags))
        return self.held[-1]

    def close(self, fd: int) -> None:
        """Close one descriptor now."""
        self.held.remove(fd)
        os.close(fd)


@pytest.fixture
def fds() -> Iterator[Descriptors]:
    """Descriptors closed after the test, pass or fail."""
    descriptors = Descriptors()
    yield descriptors
    for fd in descriptors.held:
        os.close(fd)


@pytest.fixture
def path(tmp_path) -> str:
    """A new FIFO in the test's temporary directory."""
    return str(ensure_fifo(tmp_path / "fifo"))


def fill(fd: int) -> bytes:
    """Write numbered PIPE_BUF chunks to a non-blocking fd until the pipe is full; return the bytes."""
    written = bytearray()
    for number in range(get_pipe_size(fd) // PIPE_BUF + 1):
        chunk = (f"{number:07d}\n".encode() * PIPE_BUF)[:PIPE_BUF]
        try:
            os.write(fd, chunk)
        except BlockingIOError:
            return bytes(written)
        written += chunk
    pytest.fail("the pipe took more than its capacity")


def read_available(fd: int, limit: int) -> bytes:
    """Read from a non-blocking fd until limit bytes arrived or nothing more is there."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = os.read(fd, limit - len(data))
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


class TestCapacity:
    def test_default_capacity(self, path, fds):
        """A new FIFO holds DEFAULT_PIPE_CAPACITY (65,536) bytes, at least PIPE_BUF."""
        fd = fds.open(path, os.O_RDWR | os.O_NONBLOCK)
        assert get_pipe_size(fd) >= PIPE_BUF
        assert get_pipe_size(fd) == fifo.DEFAULT_PIPE_CAPACITY == 65_536

    def test_pipe_buf(self, path, fds):
        """PIPE_BUF of a FIFO is 4,096 bytes and equals fifo.PIPE_BUF."""
        fd = fds.open(path, os.O_RDWR | os.O_NONBLOCK)
        assert os.fpathconf(fd, "PC_PIPE_BUF") == PIPE_BUF == 4096

    def test_set_pipe_size_reaches_pipe_max_size(self, path, fds):
        """set_pipe_size raises the capacity up to pipe-max-size."""
        fd = fds.open(path, os.O_RDWR | os.O_NONBLOCK)
        assert set_pipe_size(fd, pipe_max_size()) == pipe_max_size()
        assert get_pipe_size(fd) == pipe_max_size() > fifo.DEFAULT_PIPE_CAPACITY

    def test_set_pipe_size_rounds_up(self, path, fds):
        """set_pipe_size grants at least the request, rounded up to a power of two."""
        fd = fds.open(path, os.O_RDWR | os.O_NONBLOCK)
        granted = set_pipe_size(fd, 100_000)
        assert granted >= 100_000
        assert granted & (granted - 1) == 0


class TestFullPipe:
    def test_nonblocking_write_fails_with_eagain(self, path, fds):
        """A write into a full non-blocking FIFO fails with EAGAIN."""
        fds.open(path, RD)
        writer = fds.open(path, WR)
        assert len(fill(writer)) == fifo.DEFAULT_PIPE_CAPACITY
        with pytest.raises(BlockingIOError) as caught:
            os.write(writer, b"x")
        assert caught.value.errno == errno.EAGAIN

    def test_first_bytes_written_are_read_first(self, path, fds):
        """A full FIFO keeps every byte it holds: the first bytes written are the first read back."""
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        written = fill(writer)
        for _ in range(3):
            with pytest.raises(BlockingIOError):
                os.write(writer, b"late line\n")
        assert read_available(reader, len(written) + PIPE_BUF) == written

    def test_blocking_write_waits_for_reader(self, path, fds):
        """A blocking write into a full FIFO stays blocked until the reader reads."""
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        fill(writer)
        os.set_blocking(writer, True)
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(os.write, writer, b"x")
            try:
                assert not wait([future], BLOCK_PROBE_SECONDS).done
                os.read(reader, PIPE_BUF)
                assert future.result(WAIT_SECONDS) == 1
            finally:
                if not future.done():
                    fds.close(reader)  # EPIPE frees the blocked writer so the pool can shut down


class TestLargeWrites:
    def test_write_above_pipe_buf_is_allowed(self, path, fds):
        """One write of 100,000 bytes, far above PIPE_BUF, succeeds while the reader drains."""
        payload = os.urandom(100_000)
        reader, writer = fds.open(path, RD), fds.open(path, os.O_WRONLY)
        received = bytearray()
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(os.write, writer, payload)
            try:
                deadline = time.monotonic() + WAIT_SECONDS
                while len(received) < len(payload) and time.monotonic() < deadline:
                    if select.select([reader], [], [], 0.05)[0]:
                        received += read_available(reader, len(payload))
                assert future.result(WAIT_SECONDS) == len(payload)
            finally:
                if not future.done():
                    fds.close(reader)
        assert received == payload

    def test_nonblocking_write_above_free_space_is_partial(self, path, fds):
        """A non-blocking write larger than the free space returns the partial count that fitted."""
        fds.open(path, RD)
        writer = fds.open(path, WR)
        assert os.write(writer, b"p" * 100_000) == fifo.DEFAULT_PIPE_CAPACITY


class TestConcurrentWriters:
    def test_pipe_buf_lines_never_tear(self):
        """Lines of PIPE_BUF bytes from four writer processes, one write each, never tear."""
        fact = pipefacts.measure_torn_lines(PIPE_BUF, lines=50, writers=4)
        assert fact.value == {"torn": 0, "lines": 200}

    def test_small_lines_never_tear(self):
        """Short lines from concurrent writer processes come back whole and all accounted for."""
        fact = pipefacts.measure_torn_lines(300, lines=100, writers=3)
        assert fact.value == {"torn": 0, "lines": 300}


class TestPartiesComingAndGoing:
    def test_nonblocking_open_without_reader_fails_with_enxio(self, path, fds):
        """A non-blocking open for writing fails with ENXIO while nobody reads the FIFO."""
        with pytest.raises(OSError, match=os.strerror(errno.ENXIO)) as caught:
            fds.open(path, WR)
        assert caught.value.errno == errno.ENXIO

    def test_write_after_last_reader_fails_with_epipe(self, path, fds):
        """A write after the last reader closed fails with EPIPE (BrokenPipeError)."""
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        fds.close(reader)
        with pytest.raises(BrokenPipeError) as caught:
            os.write(writer, b"x")
        assert caught.value.errno == errno.EPIPE

    def test_unread_data_waits_for_next_reader(self, path, fds):
        """Unread data survives its only reader while a writer holds the FIFO; a new reader gets it."""
        first, writer = fds.open(path, RD), fds.open(path, WR)
        os.write(writer, b"line one\nline two\n")
        fds.close(first)
        assert read_available(fds.open(path, RD), 100) == b"line one\nline two\n"

    def test_reader_sees_eof_after_every_writer_closed(self, path, fds):
        """A reader gets EAGAIN while any writer remains and EOF (b"") once every writer closed."""
        reader, first, second = fds.open(path, RD), fds.open(path, WR), fds.open(path, WR)
        os.write(first, b"x")
        fds.close(first)
        assert os.read(reader, 10) == b"x"
        with pytest.raises(BlockingIOError):
            os.read(reader, 10)
        fds.close(second)
        assert os.read(reader, 10) == b""

    def test_rdwr_open_works_alone(self, path, fds):
        """open(O_RDWR) on a FIFO succeeds with no other party, and the fd reads its own writes."""
        fd = fds.open(path, os.O_RDWR)
        os.write(fd, b"self")
        assert os.read(fd, 4) == b"self"


class TestCommandLine:
    def test_json_output(self, capsys):
        """`--json` prints one JSON document with every fact, measured as expected on Linux."""
        assert pipefacts.main(["--json", "--lines", "5", "--sizes", "4096,70000"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert set(document) == {"kernel", "machine", "corrections", "facts"}
        facts = {key: fact["value"] for key, fact in document["facts"].items()}
        assert set(facts) == {
            "capacity",
            "pipe_max_size",
            "raised_capacity",
            "pipe_buf",
            "full_pipe_nonblocking",
            "full_pipe_blocking",
            "large_write",
            "partial_write",
            "torn_lines_4096",
            "torn_lines_70000",
            "open_without_reader",
            "write_without_reader",
            "data_kept_for_next_reader",
            "eof_when_writers_close",
            "rdwr_open",
        }
        assert all(set(fact) == {"label", "value", "shows"} for fact in document["facts"].values())
        assert (facts["capacity"], facts["pipe_buf"]) == (65_536, 4096)
        assert facts["full_pipe_nonblocking"]["next_write"] == "EAGAIN"
        assert facts["full_pipe_nonblocking"]["all_bytes_in_order"] is True
        assert facts["full_pipe_blocking"]["blocked_after_probe"] is True
        assert facts["large_write"]["returned"] == 100_000
        assert facts["torn_lines_4096"] == {"torn": 0, "lines": 20}
        assert facts["torn_lines_70000"]["lines"] == 20
        assert facts["open_without_reader"] == "ENXIO"
        assert facts["write_without_reader"]["outcome"].startswith("EPIPE")
        assert facts["eof_when_writers_close"] == {"one_writer_left": "EAGAIN", "all_writers_closed": "b''"}

    def test_table_states_the_corrections(self, capsys):
        """The table says a full pipe blocks or fails with EAGAIN and a write above PIPE_BUF is allowed."""
        assert pipefacts.main(["--lines", "2", "--sizes", "4096"]) == 0
        out = capsys.readouterr().out
        assert "| default capacity of a new FIFO (F_GETPIPE_SZ)" in out
        assert all(correction in out for correction in pipefacts.CORRECTIONS)
        assert "overwrit" not in out.lower()

    @pytest.mark.parametrize("argv", [["--sizes", "1"], ["--sizes", "4096,x"], ["--lines", "0"], ["--writers", "99"]])
    def test_bad_arguments_exit_with_usage(self, argv, capsys):
        """Sizes below 2 bytes, non-numeric sizes, no lines or too many writers end with a usage error."""
        with pytest.raises(SystemExit) as caught:
            pipefacts.main(argv)
        assert caught.value.code == 2
        assert "usage:" in capsys.readouterr().err
