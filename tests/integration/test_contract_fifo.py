"""Generated lines and mutations through a real FIFO and collector into PostgreSQL: good lines land, bad ones are
rejected with their bytes, and the collector keeps running."""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from strategies import lines  # the unit tests' generator of valid lines

# A few hundred examples, each a handful of lines, all through one collector: well under a minute of writing.
THROUGH_THE_PIPE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A small line limit makes the over-limit fragment cheap to write; good lines stay far below it.
MAX_LINE = 16_384
LAND_TIMEOUT_S = 30.0
# Mutations of a good line that must be rejected whole (the rejection's raw is the mutated line).
WHOLE_LINE_MUTATIONS = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "repeated key": lambda raw: raw[:-1] + b',"host_ip":"10.9.9.9"}',
    "bad utf-8": lambda raw: raw[:-1] + b',"x":"\xff"}',
    "escaped nul": lambda raw: re.sub(rb'("trace_id"\s*:\s*")', rb"\1\\u0000", raw, count=1),
    "too deep": lambda raw: b'{"deep":' + b"[" * 300 + b"]" * 300 + b"," + raw[1:],
    "crlf": lambda raw: raw + b"\r",
    "bom": lambda raw: b"\xef\xbb\xbf" + raw,
}


class TestThroughTheFifo:
    """The contract holds end to end: a real collector on a real FIFO loading into PostgreSQL."""

    @pytest.fixture
    def pipeline(self, dsn, fifo_path, collector, query):
        handle = collector(fifo_path, dsn, "--max-line-bytes", str(MAX_LINE), "--flush-interval", "0.02")
        fd = os.open(fifo_path, os.O_WRONLY)
        yield handle, fd, dsn, query
        os.close(fd)

    def test_generated_lines(self, pipeline):
        """Each example writes good lines, whole-line mutations, a glued fragment and an over-limit fragment."""
        handle, fd, dsn, query = pipeline
        counter = itertools.count()

        @THROUGH_THE_PIPE
        @given(
            st.lists(lines(max_leaves=6), min_size=1, max_size=4),
            st.sampled_from(sorted(WHOLE_LINE_MUTATIONS)),
            st.booleans(),
        )
        def example(good, mutation, over_limit):
            n = next(counter)
            good_lines = [g.raw for g in good]
            bad = WHOLE_LINE_MUTATIONS[mutation](good_lines[0])
            assert bad != good_lines[0]
            fragment = (b"y" * (MAX_LINE + 1)) if over_limit else good_lines[-1][: len(good_lines[-1]) // 3]
            marker = f"np-{n}".encode()
            last = (
                b'{"time":"2026-11-28T05:30:00Z","application_name":"a","environment_name":"e","log_event":"l",'
                b'"trace_id":"' + marker + b'","file_path":"f","host_ip":"h","data":null}'
            )
            stream = b"\n".join([*good_lines, bad, fragment + last]) + b"\n"
            rows_before = query(dsn, "SELECT count(*) FROM logs")[0][0]
            rejected_before = query(dsn, "SELECT count(*) FROM logs_rejected")[0][0]
            os.write(fd, stream)
            deadline = time.monotonic() + LAND_TIMEOUT_S
            while not query(dsn, "SELECT 1 FROM logs WHERE trace_id = %s", (marker.decode(),)):
                assert handle.alive, handle.log[-2000:]
                assert time.monotonic() < deadline, f"line {n} did not land"
                time.sleep(0.01)
            # Every good line and the marker landed (batches commit in stream order), nothing else did.
            assert query(dsn, "SELECT count(*) FROM logs")[0][0] - rows_before == len(good_lines) + 1
            assert query(dsn, "SELECT count(*) FROM logs_rejected")[0][0] - rejected_before == 2
            rejected = {bytes(r[0]) for r in query(dsn, "SELECT raw FROM logs_rejected")}
            assert bad in rejected, mutation
            assert fragment in rejected
            # Data lands as jsonb makes it of the bytes written.
            for g in good:
                if g.data_text is not None:
                    assert query(dsn, "SELECT count(*) FROM logs WHERE data = %s::jsonb", (g.data_text,))[0][0] >= 1

        example()
        assert next(counter) >= THROUGH_THE_PIPE.max_examples // 2
        assert handle.alive
        assert handle.stop() == 0
