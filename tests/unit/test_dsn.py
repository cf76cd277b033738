"""Showing connection strings and error messages without the password."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from reference.dsn import MASK, UNPARSABLE, UNPARSABLE_MESSAGE, redact, scrub


class TestRedactUri:
    @pytest.mark.parametrize(
        ("dsn", "password"),
        [
            ("postgresql://app:s3cret@db.example:5432/logs", "s3cret"),
            ("postgres://app:p%40ss@db/logs?sslmode=require", "p@ss"),
            ("postgresql://app:pa:ss@db/logs", "pa:ss"),
            ("postgresql://app@db/logs?password=s3cret", "s3cret"),
            ("postgresql://db/logs?sslmode=require&password=s3cret&application_name=np", "s3cret"),
        ],
    )
    def test_hides_password(self, dsn, password):
        """A password in the user info or in the query of a URI is replaced by ***; every other setting stays."""
        shown = redact(dsn)
        assert password not in shown
        assert "s3cret" not in shown
        expected = parse_dsn(dsn)
        expected["password"] = MASK
        assert parse_dsn(shown) == expected

    def test_password_as_libpq_reads_it(self):
        """An unencoded @ in the password ends it where libpq ends it: what libpq would send is hidden."""
        shown = redact("postgresql://app:p@ss@db/logs")
        assert parse_dsn(shown)["password"] == MASK
        assert parse_dsn(shown)["host"] == "ss@db"

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://app:one@db/logs?PASSWORD=two",
            "host=db password",
            "postgresql://app:s3cret@db/logs?no_such_option=1",
            "PASSWORD=x y",
        ],
    )
    def test_unparsable_not_shown(self, dsn):
        """A DSN libpq cannot parse that could hold a password (a URI, the word password) is not shown at all."""
        assert redact(dsn) == UNPARSABLE

    @pytest.mark.parametrize(
        ("dsn", "piece"),
        [
            ("postgresql://postgres:secret%ZZpw@/postgres?host=/tmp", "secret%ZZpw"),
            ("host=/tmp password=secret pw", "pw"),
        ],
    )
    def test_libpq_message_about_an_unparsable_dsn_is_not_shown(self, dsn, piece):
        """libpq quotes the piece of a DSN it cannot parse, maybe the password: scrub drops the whole message."""
        with pytest.raises(psycopg2.ProgrammingError) as caught:
            psycopg2.connect(dsn)
        assert f'"{piece}"' in str(caught.value)  # what libpq itself says
        assert scrub(str(caught.value), dsn) == UNPARSABLE_MESSAGE

    @pytest.mark.parametrize("text", ["/usr/bin/python3", "-m", "reference.collector", "--fifo", "x=y z"])
    def test_other_text_unchanged(self, text):
        """A text that is no DSN and cannot hold a password (a command line's other arguments) is shown as it is."""
        assert redact(text) == text

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://app@db.example:5432/logs",
            "postgresql://db/logs?sslmode=require",
            "postgresql://app:@db/logs",
            "postgresql://localhost",
            "postgresql:///logs?host=/var/run/postgresql",
            "postgresql:///logs",
        ],
    )
    def test_without_password_unchanged(self, dsn):
        """A URI without a password is shown exactly as given."""
        assert redact(dsn) == dsn


class TestRedactKeywords:
    @pytest.mark.parametrize(
        ("dsn", "password"),
        [
            ("host=db password=s3cret dbname=logs", "s3cret"),
            ("host=db password='a b' dbname=logs", "a b"),
            ("host=db password = s3cret", "s3cret"),
            ("host=db password='it\\'s s3cret' user=app", "it's s3cret"),
        ],
    )
    def test_hides_password(self, dsn, password):
        """A password=value pair, quoted or not, shows *** instead of the value; every other setting stays."""
        shown = redact(dsn)
        assert password not in shown
        expected = parse_dsn(dsn)
        expected["password"] = MASK
        assert parse_dsn(shown) == expected

    @pytest.mark.parametrize("dsn", ["host=db dbname=logs user=app", "dbname=logs", "", "service=np"])
    def test_without_password_unchanged(self, dsn):
        """A key=value string without a password is shown exactly as given."""
        assert redact(dsn) == dsn


class TestScrub:
    @pytest.mark.parametrize(
        ("dsn", "password"),
        [
            ("host=db password=s3cret user=app", "s3cret"),
            ("postgresql://app:s3cret@db/logs", "s3cret"),
            ("host=db password='two words' user=app", "two words"),
            ("postgresql://app@db/logs?password=s3cret&sslmode=require", "s3cret"),
        ],
    )
    def test_removes_password(self, dsn, password):
        """The password of the DSN no longer appears in the message, the rest of it does."""
        message = f'connection to "db" failed: bad credentials {password!r} for user "app"'
        cleaned = scrub(message, dsn)
        assert password not in cleaned
        for word in password.split():
            assert word not in cleaned
        assert cleaned.startswith('connection to "db" failed: bad credentials ')
        assert cleaned.endswith(' for user "app"')
        assert MASK in cleaned

    def test_message_echoing_the_dsn(self):
        """A message that repeats the whole DSN shows it without the password."""
        dsn = "host=db password=s3cret user=app"
        assert scrub(f"invalid connection option in {dsn!r}", dsn) == (
            "invalid connection option in 'host=db password=*** user=app'"
        )

    @pytest.mark.parametrize("dsn", ["host=db user=app", "postgresql://app@db/logs"])
    def test_without_password_unchanged(self, dsn):
        """Without a password in the DSN the message is left as it is."""
        message = "FATAL: role app does not exist: app@db password"
        assert scrub(message, dsn) == message
