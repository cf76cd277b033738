"""Show a PostgreSQL connection string without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Applied to the query alone, which has no leading "?": the first parameter starts at ^.
_QUERY_PASSWORD = re.compile(r"((?:^|[?&])password=)[^&]*", re.IGNORECASE)
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
        # Rebuilt by hand: urlunsplit drops the "//" of an empty host (postgresql:///db?host=/socket).
        shown = f"{parts.scheme}://{netloc}{parts.path}"
        if parts.query:
            shown += f"?{query}"
        if parts.fragment:
            shown += f"#{parts.fragment}"
        return shown
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", dsn)


def scrub(text: str, dsn: str) -> str:
    """Remove the password of dsn from an arbitrary text such as an exception message."""
    if "://" in dsn:
        patterns = (r"[?&]password=([^&#]+)", r"://[^:/@]*:([^@]+)@")
    else:
        patterns = (r"password\s*=\s*'((?:[^'\\]|\\.)+)'", r"password\s*=\s*([^'\s]\S*)")
    for pattern in patterns:
        match = re.search(pattern, dsn, re.IGNORECASE)
        if match and match.group(1):
            text = text.replace(match.group(1), MASK)
    return text
