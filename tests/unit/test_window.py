"""The run's time window in SQL, and when the verdict must look past it (the database side is in integration)."""

from __future__ import annotations

from loadtests.verify import LANDED_COUNT_SQL, LANDED_SEQS_SQL, PER_SOURCE_SQL, SourceResult, window_incomplete
from loadtests.window import WINDOW_SQL, scoped


def result(generated: int, landed: int, dropped: int = 0, interrupted: int = 0, corrupt: int = 0) -> SourceResult:
    return SourceResult("p0u0", generated, generated - dropped, dropped, interrupted, landed=landed, corrupt=corrupt)


class TestScoped:
    """Each query over logs carries the window before its run-id filter, or TRUE for the whole table."""

    def test_every_logs_query_has_the_window(self):
        """The per-source and byte-accounting templates take the window; the drain count has it built in."""
        for template in (PER_SOURCE_SQL, LANDED_SEQS_SQL):
            assert "{window} AND data->'_np'->>'run'" in template
            assert WINDOW_SQL in scoped(template)
            assert "{window}" not in scoped(template, whole_table=True)
            assert WINDOW_SQL not in scoped(template, whole_table=True)
        assert WINDOW_SQL in LANDED_COUNT_SQL


class TestWindowIncomplete:
    """The window is trusted only when every line put into the pipe was found intact in it, and nothing tore."""

    def test_all_found(self):
        """Every line found: the window holds the run."""
        assert not window_incomplete({"a": result(100, 100)})

    def test_drops_and_cut_writes_are_not_looked_for(self):
        """Lines dropped or cut short by the stop are not expected to land anywhere."""
        assert not window_incomplete({"a": result(100, 90, dropped=6, interrupted=4)})

    def test_a_missing_line(self):
        """One line short: it may be stamped outside the window (a skewed clock), so look at the whole table."""
        assert window_incomplete({"a": result(100, 100), "b": result(100, 99)})

    def test_a_corrupt_row(self):
        """A tear happened: a spliced time stamp can lie anywhere, so look at the whole table."""
        assert window_incomplete({"a": result(100, 100, corrupt=1)})
