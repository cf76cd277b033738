"""Property: whatever appends, trims and limits happen, the journal keeps every uncommitted byte and its bound."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference.collector import journal as journal_module
from reference.collector.journal import Journal

MIN = journal_module.MIN_SEGMENT_BYTES

steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(min_value=1, max_value=3 * MIN)),
        st.tuples(st.just("commit"), st.floats(min_value=0.0, max_value=1.0)),
    ),
    min_size=1,
    max_size=25,
)


class TestJournalAccounting:
    """Appends, commits and trims in any order: reads return what was appended, the disk stays within the limit."""

    @settings(max_examples=60, deadline=None)
    @given(limit_segments=st.integers(min_value=1, max_value=6), script=steps)
    # Filled to the byte by one append, then all committed: the trim must free it though room() never said 0.
    @example(limit_segments=1, script=[("append", MIN)])
    def test_bytes_survive_and_disk_use_stays_bounded(self, limit_segments: int, script: list) -> None:
        """Bytes past the committed offset read back as written; disk_bytes <= max_bytes; all committed frees room."""
        max_bytes = limit_segments * MIN
        with tempfile.TemporaryDirectory() as folder:
            j = Journal(Path(folder) / "j", max_bytes=max_bytes)
            written = bytearray()
            committed = 0
            try:
                for action, value in script:
                    if action == "append":
                        data = bytes((len(written) + k) % 251 for k in range(value))
                        n = j.append(data)
                        assert n == min(value, n)
                        written += data[:n]
                    else:
                        committed += int((j.end - committed) * value)
                        j.trim(committed)
                    assert j.end == len(written)
                    assert j.disk_bytes <= max_bytes
                    offset = committed
                    while offset < j.end:
                        piece = j.read(offset, 1 << 20)
                        assert piece == bytes(written[offset : offset + len(piece)])
                        offset += len(piece)
                j.trim(j.end)  # everything loaded: the journal must take bytes again, however full it was
                assert j.room() > 0
            finally:
                j.close()
