"""Show a PostgreSQL connection string without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)
MASK = "***"


def redact(dsn: str) -> str:
    """Return dsn with any password replaced by ***, for URIs and key=value strings alike."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                user, password = userinfo.split(":", 1)
                if password:
                    netloc = f"{user}:{MASK}@{host}"
        query = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", parts.query)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", dsn)


def scrub(text: str, dsn: str) -> str:
    """Remove the password of dsn from an arbitrary text such as an exception message."""
    for pattern in (r"password\s*=\s*'?([^'\s]+)", r"://[^:/@]*:([^@]+)@"):
        match = re.search(pattern, dsn, re.IGNORECASE)
        if match and match.group(1):
            text = text.replace(match.group(1), MASK)
    return text
