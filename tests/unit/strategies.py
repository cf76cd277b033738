"""Hypothesis strategies for event lines: valid ones with extreme but legal values, written in many styles."""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass

from hypothesis import strategies as st

from reference.contract import COLUMNS

# One valid event's text fields, the base that unit tests change one field of.
GOOD_FIELDS = {
    "time": "2026-11-28T05:30:00.123456+00:00",
    "application_name": "WebApp",
    "environment_name": "production",
    "log_event": "login",
    "trace_id": "6daea6a5-5028-4c3e-b347-41cf75916ff9",
    "file_path": "/usr/src/app/login.py",
    "host_ip": "192.168.1.7",
}

# Every plane, but no NUL (PostgreSQL text and jsonb refuse it) and no lone surrogate (not encodable as UTF-8).
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
texts = st.text(TEXT_CHARS, min_size=1, max_size=40)
keys = st.text(TEXT_CHARS, max_size=12)  # the empty key is legal JSON


@dataclass(frozen=True)
class Number:
    """A JSON number kept as its text, so its exact digits can be compared with what lands."""

    text: str


@st.composite
def numbers(draw: st.DrawFn) -> Number:
    """Integers beyond 64 bits, long decimals, tiny and huge exponents, negative zero: all legal JSON."""
    sign = draw(st.sampled_from(["", "-"]))
    integer = draw(st.sampled_from(["0", "1", "9"])) if draw(st.booleans()) else str(draw(st.integers(1, 10**40)))
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,30}", fullmatch=True)))
    # jsonb's numeric holds exponents down to about -16,383 and up to about 131,071 digits.
    exponent = draw(
        st.one_of(
            st.just(""),
            st.builds(
                lambda e, s, n: f"{e}{s}{n}",
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.integers(0, 999),
            ),
        )
    )
    return Number(f"{sign}{integer}{fraction}{exponent}")


json_leaves = st.one_of(st.none(), st.booleans(), numbers(), st.text(TEXT_CHARS, max_size=30))


def json_values(max_leaves: int = 30) -> st.SearchStrategy:
    """Nested arrays and objects of leaves (objects with any keys, the empty one included)."""
    return st.recursive(
        json_leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
        max_leaves=max_leaves,
    )


@dataclass(frozen=True)
class Style:
    """How a writer spells JSON: spacing after ',' and ':', whether non-ASCII is escaped."""

    item: str
    key: str
    ascii_only: bool


styles = st.builds(
    Style, st.sampled_from([",", ", ", " ,\t", ",\r "]), st.sampled_from([":", ": ", " :\t"]), st.booleans()
)


def encode(value: object, style: Style) -> str:
    """value as JSON text in the given style; Number keeps its digits."""
    if isinstance(value, Number):
        return value.text
    if isinstance(value, dict):
        return "{" + style.item.join(encode(k, style) + style.key + encode(v, style) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + style.item.join(encode(v, style) for v in value) + "]"
    return json.dumps(value, ensure_ascii=style.ascii_only)


@st.composite
def stamps(draw: st.DrawFn, leap_seconds: bool = True) -> str:
    """RFC 3339 date-times: every separator and offset form, fractions of any length, leap seconds."""
    year = draw(st.integers(2, 9998))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    second = draw(st.integers(0, 60 if leap_seconds else 59))
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,12}", fullmatch=True)))
    offset = draw(
        st.one_of(
            st.sampled_from("Zz"),
            st.builds(
                lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)
            ),
        )
    )
    return (
        f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from('Tt '))}{draw(st.integers(0, 23)):02d}:"
        f"{draw(st.integers(0, 59)):02d}:{second:02d}{fraction}{offset}"
    )


@dataclass(frozen=True)
class Line:
    """A generated valid line and what it holds."""

    raw: bytes
    fields: dict
    data_text: str | None  # data as written, None for null


@st.composite
def lines(draw: st.DrawFn, max_leaves: int = 12) -> Line:
    """A valid event line: any order of the eight keys, any style, extreme but legal values."""
    style = draw(styles)
    fields = {name: draw(texts) for name in COLUMNS[1:7]}
    fields["time"] = draw(stamps())
    data = draw(st.one_of(st.none(), st.dictionaries(keys, json_values(max_leaves), max_size=5)))
    order = draw(st.permutations(COLUMNS))
    data_text = None if data is None else encode(data, style)
    members = [
        encode(name, style)
        + style.key
        + (encode(fields[name], style) if name != "data" else ("null" if data_text is None else data_text))
        for name in order
    ]
    raw = ("{" + style.item.join(members) + "}").encode()
    return Line(raw, fields, data_text)


def deep_data(depth: int) -> str:
    """A data object whose innermost array sits at `depth` levels, the event object counted."""
    return '{"d":' + "[" * (depth - 2) + "1" + "]" * (depth - 2) + "}"
