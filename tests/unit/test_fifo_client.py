"""The harness's FIFO client under gevent: a full pipe parks one greenlet, never the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The client runs under gevent's monkey-patching (Locust applies it on import), so each check runs in a
# child interpreter: patching this pytest process would change every other test.
SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, time
    import gevent
    from locust.env import Environment
    from loadtests.fifo_client import FifoClient, SourceCounts

    drop = sys.argv[1] == "drop"
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "f")
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads: the pipe fills
    env = Environment()
    reported = {"requests": 0, "failures": 0}

    def on_request(exception=None, **_kw):
        reported["requests"] += 1
        reported["failures"] += exception is not None

    env.events.request.add_listener(on_request)
    counts = SourceCounts()
    client = FifoClient(env, path, counts, drop_when_full=drop)
    line = b"x" * 4095 + b"\\n"

    def writer():
        while True:
            client.write([line], "pipe_buf")
            gevent.sleep(0)

    pauses = []

    def ticker():
        for _ in range(50):
            started = time.perf_counter()
            gevent.sleep(0.01)
            pauses.append(time.perf_counter() - started)

    w = gevent.spawn(writer)
    t = gevent.spawn(ticker)
    t.join(timeout=10)
    result = {"ticks": len(pauses), "max_pause_s": max(pauses), "sent": counts.sent, "dropped": counts.dropped,
              "eagain": counts.eagain, "writer_blocked": not w.dead, **reported}
    w.kill()
    client.close()
    os.close(reader)
    os.unlink(path)
    os.rmdir(folder)
    print(json.dumps(result))
""")


def run_client(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


class TestFifoClientUnderGevent:
    def test_a_stalled_reader_does_not_freeze_other_greenlets(self):
        """A writer parked on a full pipe leaves every other greenlet running on time."""
        r = run_client("block")
        assert r["ticks"] == 50
        # A frozen process would stop the ticker for as long as the writer waits (forever here); the bound
        # is generous so that a loaded machine cannot make it flaky.
        assert r["max_pause_s"] < 1.0
        assert r["writer_blocked"] is True
        assert r["sent"] == 16  # 16 x 4096 B fill the 65,536-byte pipe exactly
        assert r["eagain"] >= 1

    def test_drop_mode_counts_each_write_that_finds_the_pipe_full(self):
        """In drop mode a full pipe makes writes fail fast, each one counted and reported to Locust."""
        r = run_client("drop")
        assert r["sent"] == 16
        assert r["dropped"] > 0
        assert r["failures"] == r["dropped"]
        assert r["requests"] == r["sent"] + r["dropped"]


RECHECK_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    from locust.env import Environment
    from loadtests.fifo_client import FifoClient, SourceCounts

    path = os.path.join(tempfile.mkdtemp(), "f")
    open(path, "wb").close()  # the FIFO was replaced by a regular file
    env = Environment()
    failures = []
    env.events.request.add_listener(lambda exception=None, **_kw: failures.append(repr(exception)))
    client = FifoClient(env, path, SourceCounts(), drop_when_full=True)
    delivered = client.write([b"line\\n"], "small")
    print(json.dumps({"delivered": delivered, "size": os.path.getsize(path), "failures": failures}))
""")


class TestFifoClientRecheck:
    """The Locust client re-checks at every open that the path is still a FIFO."""

    def test_a_regular_file_at_the_path_is_refused(self):
        """A FIFO replaced by a regular file: the write fails as a request and nothing lands in the file."""
        done = subprocess.run(
            [sys.executable, "-c", RECHECK_SCRIPT], capture_output=True, text=True, timeout=60, check=True
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["delivered"] is False
        assert result["size"] == 0
        assert "not a FIFO" in result["failures"][0]
