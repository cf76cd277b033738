"""The reference emitter against a real FIFO: whole lines, no gaps, honest counts, and a reader that comes back."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import orjson
import pytest

from reference.fifo import ensure_fifo

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux FIFOs")

# A read this large takes everything a default pipe (64 KiB) holds, so with writes of whole lines of at
# most PIPE_BUF every read ends on a line boundary.
READ_CHUNK = 1024 * 1024
# How long a reader sleeps in poll() before it looks at its stop flag again.
POLL_MS = 50
# Bound for anything that takes well under a second when things work.
TIMEOUT_S = 20.0


class FifoReader:
    """Reads a FIFO in a thread until EOF after the emitter exited, a line quota, or stop().

    The descriptor is opened non-blocking at once, so a writer's non-blocking open finds a reader; an empty
    read counts as EOF only after writers_done is set, because writers of several processes may come and go.
    """

    def __init__(self, path: str, writers_done: threading.Event, *, max_lines: int | None = None) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self.lines = 0
        self.eof = False
        self.error: OSError | None = None
        self._writers_done = writers_done
        self._max_lines = max_lines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                poller.poll(POLL_MS)
                try:
                    chunk = os.read(self.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    if self._writers_done.is_set():
                        self.eof = True
                        return
                    time.sleep(POLL_MS / 1000)  # no writer right now
                    continue
                self.data += chunk
                self.lines += chunk.count(b"\n")
                if self._max_lines is not None and self.lines >= self._max_lines:
                    return
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self.fd)

    def join(self, timeout: float = TIMEOUT_S) -> None:
        """Wait for the thread to finish on its own; fail the test if it does not."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the reader did not finish in time"
        assert self.error is None

    def stop(self) -> None:
        """Make the thread finish and close its descriptor."""
        self._stop.set()
        self._thread.join(TIMEOUT_S)


class Harness:
    """Emitter processes and readers one test started; the fixture ends and closes them."""

    def __init__(self, fifo: str) -> None:
        self.fifo = fifo
        self.writers_done = threading.Event()
        self.procs: list[subprocess.Popen] = []
        self.readers: list[FifoReader] = []

    def emitter(self, *args: str) -> subprocess.Popen:
        """Start `python -m reference.emitter --fifo FIFO ARGS` in its own process group."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "reference.emitter", "--fifo", self.fifo, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen) -> tuple[int, dict | None, str]:
        """Wait for the emitter; return its exit status, its JSON summary (if any) and its stderr."""
        out, err = proc.communicate(timeout=TIMEOUT_S)
        self.writers_done.set()
        summary = orjson.loads(out.splitlines()[-1]) if out.strip() else None
        return proc.returncode, summary, err.decode()

    def reader(self, *, max_lines: int | None = None) -> FifoReader:
        """Open the FIFO for reading now and read it in a thread."""
        reader = FifoReader(self.fifo, self.writers_done, max_lines=max_lines)
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        """Kill emitters still running (with their writer children) and stop every reader."""
        self.writers_done.set()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for reader in self.readers:
            reader.stop()


@pytest.fixture
def harness(tmp_path) -> Iterator[Harness]:
    """A FIFO in tmp_path and the processes and readers that use it, ended after the test."""
    h = Harness(str(ensure_fifo(tmp_path / "fifo")))
    try:
        yield h
    finally:
        h.close()


def split_lines(data: bytes) -> list[bytes]:
    """The whole lines of data; data must end on a line boundary."""
    assert data.endswith(b"\n") or not data, "the data ends in a torn line"
    return data.split(b"\n")[:-1]


def bookkeeping(line: bytes) -> tuple[str, str, int]:
    """(run, source, seq) of one encoded event."""
    np = orjson.loads(line)["data"]["_np"]
    return np["run"], np["src"], np["seq"]


class TestDelivery:
    def test_three_writers_deliver_every_line(self, harness):
        """--count 500 --writers 3 delivers 500 whole JSON lines, each source's seq 1..n in order."""
        reader = harness.reader()
        proc = harness.emitter("--count", "500", "--writers", "3", "--run-id", "t3w", "--seed", "5")
        status, summary, err = harness.finish(proc)
        reader.join()
        assert status == 0, err
        assert reader.eof
        lines = split_lines(bytes(reader.data))
        assert len(lines) == 500
        seqs: dict[str, list[int]] = defaultdict(list)
        for line in lines:
            run, source, seq = bookkeeping(line)
            assert run == "t3w"
            seqs[source].append(seq)
        assert sorted(seqs) == ["w0", "w1", "w2"]
        assert {s: len(v) for s, v in seqs.items()} == {"w0": 167, "w1": 167, "w2": 166}
        for values in seqs.values():
            assert values == list(range(1, len(values) + 1))
        assert summary["lines_sent"] == 500
        assert summary["lines_dropped"] == 0
        assert summary["bytes_sent"] == len(reader.data)
        assert summary["writers"] == 3
        assert [(s["source"], s["last_seq"], s["lines_sent"]) for s in summary["sources"]] == [
            ("w0", 167, 167),
            ("w1", 167, 167),
            ("w2", 166, 166),
        ]

    def test_large_lines_arrive_whole(self, harness):
        """Lines larger than PIPE_BUF from one writer arrive whole and in order."""
        reader = harness.reader()
        proc = harness.emitter("--count", "40", "--size", "over_pipe_buf", "--run-id", "big")
        status, summary, err = harness.finish(proc)
        reader.join()
        assert status == 0, err
        lines = split_lines(bytes(reader.data))
        assert [bookkeeping(line) for line in lines] == [("big", "w0", n) for n in range(1, 41)]
        assert summary["bytes_sent"] == len(reader.data)
        assert all(4097 <= len(line) + 1 <= 65_536 for line in lines)


class TestNonblocking:
    def test_full_pipe_drops_and_counts(self, harness):
        """With nobody draining a full pipe, lines are dropped and counted; the pipe holds the sent lines whole."""
        fd = os.open(harness.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            proc = harness.emitter("--count", "3000", "--nonblocking", "--run-id", "nb")
            status, summary, err = harness.finish(proc)
            assert status == 0, err
            held = bytearray()
            while chunk := os.read(fd, READ_CHUNK):
                held += chunk
        finally:
            os.close(fd)
        assert summary["lines_dropped"] > 0
        assert summary["lines_sent"] > 0
        assert summary["lines_sent"] + summary["lines_dropped"] == 3000
        assert summary["eagain"] > 0
        lines = split_lines(bytes(held))
        assert len(lines) == summary["lines_sent"]
        assert len(held) == summary["bytes_sent"]
        seqs = [bookkeeping(line)[2] for line in lines]
        assert seqs == sorted(set(seqs))
        assert seqs[0] == 1


class TestRefusals:
    def test_regular_file(self, harness, tmp_path):
        """The emitter refuses a regular file with exit status 2 and says what to do."""
        path = tmp_path / "not-a-fifo.log"
        path.write_bytes(b"keep me\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "reference.emitter", "--fifo", str(path), "--count", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        harness.procs.append(proc)
        out, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 2
        assert out == b""
        assert f"error: {path} is a regular file, not a FIFO; point --fifo at the collector's FIFO" in err.decode()
        assert path.read_bytes() == b"keep me\n"

    @pytest.mark.parametrize("size", ["tiny", "900-500", "10-20"])
    def test_bad_size(self, harness, size):
        """An unusable --size is refused with exit status 2 and the reason."""
        proc = harness.emitter("--count", "5", "--size", size)
        status, summary, err = harness.finish(proc)
        assert status == 2
        assert summary is None
        assert "--size" in err
        assert repr(size) in err


class TestReaderGoesAway:
    def test_blocking_emitter_loses_nothing(self, harness):
        """A blocking emitter whose reader closes and is replaced delivers every line exactly once."""
        count = 3000
        first = harness.reader(max_lines=1000)
        proc = harness.emitter("--count", str(count), "--size", "small", "--run-id", "re")
        first.join()
        assert not first.eof
        time.sleep(0.2)  # the emitter now finds no reader: EPIPE, then it waits in open()
        second = harness.reader()
        status, summary, err = harness.finish(proc)
        second.join()
        assert status == 0, err
        assert second.eof
        got_first = split_lines(bytes(first.data))
        got_second = split_lines(bytes(second.data))
        assert 1000 <= len(got_first) < count
        seqs = [bookkeeping(line)[2] for line in got_first + got_second]
        # Each write is at most PIPE_BUF, so EPIPE means none of it entered the pipe: resending it cannot
        # duplicate, and the bytes left in the pipe when the first reader closed go to the second.
        assert seqs == list(range(1, count + 1))
        assert summary["lines_sent"] == count
        assert summary["lines_dropped"] == 0
        assert summary["epipe"] >= 1
        assert summary["bytes_sent"] == len(first.data) + len(second.data)
        assert "waiting for a reader" in err
