"""The line contract against PostgreSQL: what the collector accepts and stores is what PostgreSQL's casts make of it."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.collector.loader import COPY_SQL
from reference.collector.validate import parse_line
from reference.contract import MAX_NESTING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from strategies import Style, encode, json_values, keys, stamps, styles

# A few hundred examples per property: each costs a few PostgreSQL round trips.
DIFFERENTIAL = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
TEXTS = '"application_name":"a","environment_name":"e","log_event":"l","trace_id":"t","file_path":"f","host_ip":"h"'

# The deliberate disagreements, each with a stamp or data that shows it (docs/collector.md lists them).
# collector accepts (stores the UTC instant), PostgreSQL's own cast refuses:
PG_REFUSES_TIME = {
    "leap second at the end of a day with a fraction": "2016-12-31T23:59:60.5Z",
    "offset beyond +-15:59": "2026-11-28T05:30:00+20:00",
    "hundreds of fraction digits": "2026-11-28T05:30:00." + "1" * 300 + "Z",
}
# collector refuses, PostgreSQL accepts:
COLLECTOR_REFUSES_TIME = {
    "not RFC 3339 (no offset)": "2026-11-28T05:30:00",
    "not RFC 3339 (basic offset)": "2026-11-28T05:30:00+0100",
    "not RFC 3339 (a date alone)": "2026-11-28",
    "instant after 9999 (UTC)": "9999-12-31T23:59:59-00:01",
}
# collector refuses, jsonb accepts:
COLLECTOR_REFUSES_DATA = {
    "nested deeper than 256 levels": '{"d":' + "[" * 300 + "]" * 300 + "}",
}
# collector accepts (passes the bytes on), jsonb refuses at COPY: the row is rejected through the loader's bisection.
PG_REFUSES_DATA = {
    "number beyond numeric's range": '{"n":1e200000}',
}


def event_line(time_text: str, data_text: str) -> bytes:
    """A line with the given time stamp and data (both as JSON text)."""
    return f'{{"time":{encode(time_text, Style(",", ":", False))},{TEXTS},"data":{data_text}}}'.encode()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection in UTC on the test's database (with the logs table)."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def cast(conn, value: str, to: str) -> tuple[bool, object]:
    """(True, PostgreSQL's value) of value::to, or (False, PostgreSQL's message)."""
    with conn.cursor() as cur:
        try:
            cur.execute(f"SELECT %s::{to}::text", (value,))  # to is a constant of this module
        except psycopg2.DataError as exc:
            return False, str(exc).splitlines()[0]
        return True, cur.fetchone()[0]


def load(conn, row: bytes) -> tuple[bool, object]:
    """COPY one collector row into logs and read it back: (True, (time, data) as text), or (False, the error)."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            cur.copy_expert(COPY_SQL, io.BytesIO(row))
        except psycopg2.DataError as exc:
            return False, str(exc).splitlines()[0]
        else:
            cur.execute("SELECT time::text, data::text FROM logs")
            return True, cur.fetchone()
        finally:
            cur.execute("ROLLBACK")


def verdicts(conn, time_text: str, data_text: str) -> tuple[tuple[bool, object], ...]:
    """What the collector stores for the line (after a real COPY), and what PostgreSQL's casts give."""
    row, rejections = parse_line(event_line(time_text, data_text))
    assert all(not r.reason.startswith("internal error") for r in rejections)
    stored = (False, rejections[0].reason) if row is None else load(conn, row)
    pg_time = cast(conn, time_text, "timestamptz")
    return stored, pg_time, cast(conn, data_text, "jsonb")


def refused_by_pg_on_purpose(stamp: str) -> bool:
    """Whether a stamp the collector stores but PostgreSQL's cast refuses is one of PG_REFUSES_TIME's kinds."""
    return bool(re.search(r"[+-](1[6-9]|2[0-3]):[0-5][0-9]$", stamp)) or stamp[17:19] == "60" or len(stamp) > 200


class TestTimeAgainstTimestamptz:
    """Every stamp: the collector and ::timestamptz agree, or the disagreement is one of the documented rules."""

    @DIFFERENTIAL
    @given(
        stamps()
        | st.from_regex(
            r"[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]"
            r"(\.[0-9]{1,9})?([Zz]|[+-][0-2][0-9]:[0-6][0-9])?",
            fullmatch=True,
        )
    )
    def test_stamps(self, conn, text):
        """Both accept: the same instant. Only one accepts: a documented rule names why."""
        (stored_ok, stored), (pg_ok, pg) = verdicts(conn, text, "null")[:2]
        if stored_ok and pg_ok:
            assert stored[0] == pg, text
        elif stored_ok:
            assert refused_by_pg_on_purpose(text), (text, pg)
        elif pg_ok:
            assert stored.startswith(("field 'time' must be", "field 'time' '")), (text, stored)
            assert "RFC 3339" in stored or "is not a real" in stored or "outside the years" in stored, stored

    @pytest.mark.parametrize("rule", PG_REFUSES_TIME)
    def test_kept_disagreement_collector_accepts(self, conn, rule):
        """Deliberate: the collector stores these RFC 3339 stamps as their UTC instant; PostgreSQL's cast refuses."""
        stamp = PG_REFUSES_TIME[rule]
        (stored_ok, stored), (pg_ok, _pg) = verdicts(conn, stamp, "null")[:2]
        assert stored_ok, stored
        assert stored[0].endswith("+00")
        assert not pg_ok

    @pytest.mark.parametrize("rule", COLLECTOR_REFUSES_TIME)
    def test_kept_disagreement_collector_refuses(self, conn, rule):
        """Deliberate: PostgreSQL reads these, the contract does not (not RFC 3339, or beyond year 9999)."""
        (stored_ok, stored), (pg_ok, _pg) = verdicts(conn, COLLECTOR_REFUSES_TIME[rule], "null")[:2]
        assert not stored_ok
        assert "field 'time'" in stored
        assert pg_ok


class TestDataAgainstJsonb:
    """Every data object: the collector stores what ::jsonb makes of its bytes, or refuses what jsonb refuses."""

    @DIFFERENTIAL
    @given(st.dictionaries(keys, json_values(12), max_size=5), styles, st.data())
    def test_objects(self, conn, value, style, data):
        """Generated objects (extreme numbers, any keys, any plane), maybe mutated: both agree, exactly."""
        text = encode(value, style)
        mutation = data.draw(st.sampled_from(["none", "none", "repeat", "nul", "surrogate", "truncate"]))
        if mutation == "repeat" and value:
            text = text[:-1] + "," + text[1:]  # every key once more: jsonb keeps the last value
        elif mutation == "nul":
            text = text[:-1] + ("," if value else "") + '"z":"\\u0000"}'
        elif mutation == "surrogate":
            text = text[:-1] + ("," if value else "") + '"z":"\\udc00"}'
        elif mutation == "truncate" and len(text) > 2:
            text = text[: data.draw(st.integers(1, len(text) - 1))]
        (stored_ok, stored), _pg_time, (pg_ok, pg) = verdicts(conn, "2026-11-28T05:30:00Z", text)
        assert stored_ok == pg_ok, (text, stored, pg)
        if stored_ok:
            assert stored[1] == pg, text

    @pytest.mark.parametrize("rule", COLLECTOR_REFUSES_DATA)
    def test_kept_disagreement_collector_refuses(self, conn, rule):
        """Deliberate: nesting past 256 levels is refused; jsonb would take it."""
        (stored_ok, stored), _t, (pg_ok, _pg) = verdicts(conn, "2026-11-28T05:30:00Z", COLLECTOR_REFUSES_DATA[rule])
        assert not stored_ok
        assert f"at most {MAX_NESTING} are allowed" in stored
        assert pg_ok

    @pytest.mark.parametrize("rule", PG_REFUSES_DATA)
    def test_kept_disagreement_left_to_postgresql(self, conn, rule):
        """Deliberate: a number beyond numeric's range passes the collector; the COPY refuses it (bisection)."""
        (stored_ok, stored), _t, (pg_ok, _pg) = verdicts(conn, "2026-11-28T05:30:00Z", PG_REFUSES_DATA[rule])
        assert not stored_ok
        assert "numeric" in stored
        assert not pg_ok
