"""Showing connection strings and error messages without the password."""

from __future__ import annotations

import pytest

from reference.dsn import MASK, redact, scrub


class TestRedactUri:
    @pytest.mark.parametrize(
        ("dsn", "shown"),
        [
            ("postgresql://app:s3cret@db.example:5432/logs", "postgresql://app:***@db.example:5432/logs"),
            ("postgres://app:p%40ss@db/logs?sslmode=require", "postgres://app:***@db/logs?sslmode=require"),
            ("postgresql://app:pa:ss@db/logs", "postgresql://app:***@db/logs"),
            ("postgresql://app:p@ss@db/logs", "postgresql://app:***@db/logs"),
            ("postgresql://app@db/logs?password=s3cret", "postgresql://app@db/logs?password=***"),
            ("postgresql://db/logs?sslmode=require&password=s3cret&application_name=np",
             "postgresql://db/logs?sslmode=require&password=***&application_name=np"),
            ("postgresql://app:one@db/logs?PASSWORD=two", "postgresql://app:***@db/logs?PASSWORD=***"),
        ],
    )
    def test_hides_password(self, dsn, shown):
        """A password in the user info or in the query of a URI is replaced by ***."""
        assert redact(dsn) == shown
        assert "s3cret" not in redact(dsn)

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
        ("dsn", "shown"),
        [
            ("host=db password=s3cret dbname=logs", "host=db password=*** dbname=logs"),
            ("host=db password='a b' dbname=logs", "host=db password=*** dbname=logs"),
            ("host=db password = s3cret", "host=db password = ***"),
            ("host=db password='it\\'s s3cret' user=app", "host=db password=*** user=app"),
            ("PASSWORD=s3cret host=db", "PASSWORD=*** host=db"),
        ],
    )
    def test_hides_password(self, dsn, shown):
        """A password=value pair, quoted or not, shows *** instead of the value."""
        assert redact(dsn) == shown

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
            "invalid connection option in 'host=db password=*** user=app'")

    @pytest.mark.parametrize("dsn", ["host=db user=app", "postgresql://app@db/logs"])
    def test_without_password_unchanged(self, dsn):
        """Without a password in the DSN the message is left as it is."""
        message = "FATAL: role app does not exist: app@db password"
        assert scrub(message, dsn) == message
