"""Faker-built log events in the README's schema, pre-encoded once and stamped fast with time, trace and seq."""

from __future__ import annotations

import functools
import hashlib
import random
import time
from dataclasses import dataclass

import orjson
from faker import Faker

from reference.sizes import MAX_RUN_ID_LENGTH, MAX_SOURCE_LENGTH, SizeRange

# Faker builds about 1,200 full records per second per core: a pool of this many costs ~0.3 s once per
# process and gives enough variety that consecutive lines rarely share a record.
RECORD_POOL_SIZE = 400
# Templates are (record, exact size) pairs; each event samples one. More templates means more variety;
# the budget keeps a factory of 1 MiB lines to ~8 MiB (15 templates), since a Locust process may hold dozens.
MAX_TEMPLATES = 256
TEMPLATE_MEMORY_BUDGET = 8 * 1024 * 1024
# The time stamp always has this shape, so every line of a template has the same length.
TIME_FORMAT_LENGTH = len("2026-11-28T05:30:00.123456+00:00")
# Room left in the padding for the sequence number to grow from 1 digit to this many.
MAX_SEQ_DIGITS = 12
# Key under data that carries the harness's bookkeeping: run id, source (emitter) id and sequence number.
BOOKKEEPING_KEY = "_np"
# data._np.chk = "TTTTTT-SSSSSS": the first hex digits of the trace id, and of an md5 over the other text
# fields and the message. A torn line that still parses as JSON (pieces of two lines whose cuts fall in
# the same kind of text) fails this check in SQL, so it counts as torn, not as landed. 6 hex digits each:
# a corrupt row passes by chance once in 16 million.
CHECK_HEX = 6
CHECK_LENGTH = 2 * CHECK_HEX + 1
# The RFC 4122 variant: the 17th hex digit of a UUID is one of 8, 9, a, b; map any random digit onto them.
_UUID_VARIANT = {ord(d): b"89ab"[int(d, 16) & 3 : (int(d, 16) & 3) + 1] for d in "0123456789abcdef"}
CHECKED_FIELDS = ("application_name", "environment_name", "log_event", "file_path", "host_ip")

APPLICATIONS = ("WebApp", "LoadBalancer", "AuthService", "PaymentService", "Inventory", "Scheduler", "Search")
ENVIRONMENTS = ("production", "production", "production", "staging", "development", "qa")
EVENTS = {
    "access": "/usr/src/app/haproxy",
    "login": "/usr/src/app/login.py",
    "login_error": "/usr/src/app/login.py",
    "logout": "/usr/src/app/login.py",
    "purchase": "/usr/src/app/checkout.py",
    "signup": "/usr/src/app/accounts.py",
    "search": "/usr/src/app/search.py",
}
HTTP_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Template:
    """One encoded event split around the values that change per line."""

    head: bytes  # up to the time value
    after_time: bytes  # up to the trace id value
    after_trace: bytes  # up to the padding
    padding: bytes  # message text, sized for a one-digit seq; its plain tail shrinks as seq grows
    before_check: bytes  # bookkeeping up to the check value
    after_check: bytes  # up to the seq value
    tail: bytes  # closes the objects and ends the line
    fields: str  # the text fields the content check covers, joined by "|", message excluded

    def padding_for(self, digits: int) -> bytes:
        """The message text for a seq of this many digits (the line keeps its exact length)."""
        return self.padding[: len(self.padding) - digits + 1]

    def content_sum(self, digits: int) -> bytes:
        """The content half of data._np.chk: md5 over the text fields and the message, as SQL can recompute it."""
        message = orjson.loads(b'"' + self.padding_for(digits) + b'"')
        return hashlib.md5(f"{self.fields}|{message}".encode(), usedforsecurity=False).hexdigest()[:CHECK_HEX].encode()


def _traceback(fake: Faker) -> str:
    frames = "".join(
        f'  File "/usr/src/app/{fake.word()}.py", line {fake.random_int(10, 900)}, in {fake.word()}\n'
        for _ in range(fake.random_int(2, 5))
    )
    return f"Traceback (most recent call last):\n{frames}ValueError: {fake.sentence(nb_words=6)}"


def _record(fake: Faker) -> dict:
    """One realistic event, without time, trace id and bookkeeping."""
    event = fake.random_element(tuple(EVENTS))
    user: dict[str, object] = {"user": fake.name(), "age": fake.random_int(18, 90), "email": fake.email()}
    data: dict[str, object]
    if event == "access":
        data = {
            "method": fake.random_element(HTTP_METHODS),
            "path": "/" + fake.uri_path(),
            "status": fake.random_element((200, 200, 200, 201, 204, 301, 404, 500)),
            "bytes": fake.random_int(120, 90_000),
        }
    elif event == "login_error":
        data = {**user, "traceback": _traceback(fake)}
    elif event == "purchase":
        data = {**user, "amount": float(fake.pydecimal(2, 2, positive=True)), "currency": fake.currency_code()}
    else:
        data = user
    return {
        "application_name": fake.random_element(APPLICATIONS),
        "environment_name": fake.random_element(ENVIRONMENTS),
        "log_event": event,
        "file_path": EVENTS[event],
        "host_ip": fake.ipv4_private(),
        "data": data,
    }


@functools.lru_cache(maxsize=8)
def record_pool(seed: int) -> tuple[dict, ...]:
    """Build (once per process and seed) the pool of faker records events are sampled from."""
    fake = Faker()
    fake.seed_instance(seed)
    return tuple(_record(fake) for _ in range(RECORD_POOL_SIZE))


@functools.lru_cache(maxsize=8)
def filler_text(seed: int) -> tuple[bytes, bytes]:
    """Message text for padding: (frames, plain) as JSON-string bytes; plain has no escapes, so any cut is valid."""
    fake = Faker()
    fake.seed_instance(seed)
    frames = orjson.dumps("\n".join(_traceback(fake) for _ in range(8)))[1:-1]
    plain = " ".join(fake.sentence(nb_words=12) for _ in range(40)).encode("ascii")
    return frames, plain


@functools.lru_cache(maxsize=8)
def _sentence_starts(seed: int) -> tuple[int, ...]:
    """Offsets in the plain filler text where a sentence begins."""
    plain = filler_text(seed)[1]
    return (0, *(i + 2 for i in range(len(plain) - 2) if plain[i : i + 2] == b". "))


def _padding(seed: int, length: int, variant: int = 0) -> bytes:
    """Exactly length bytes of JSON-string content that reads like a log message; it ends in plain text.

    variant picks the sentence the message starts with, so templates do not all say the same thing; a long
    message starts with stack traces.
    """
    frames, plain = filler_text(seed)
    starts = _sentence_starts(seed)
    start = starts[variant % len(starts)]
    text = plain[start:] + b" " + plain[:start]  # the filler read from one of its sentences, no escapes
    body = length - MAX_SEQ_DIGITS
    out = bytearray()
    # Whole escaped frames only: a cut inside one could split an escape; plain text fills the rest exactly.
    while body - len(out) > len(frames) + len(text):
        out += frames + b"\\n"
    while len(out) < body:
        out += text[: body - len(out)]
    # The last MAX_SEQ_DIGITS bytes must be plain text, so the seq can grow by cutting them.
    return bytes(out) + text[len(text) - MAX_SEQ_DIGITS :]


def build_template(record: dict, size: int, run_id: str, source: str, seed: int, variant: int = 0) -> Template:
    """Encode record so that every line stamped from it is exactly size bytes long, newline included."""
    time_marker, trace_marker = "\x01TIME\x01", "\x01TRACE\x01"
    shapes: tuple[dict, dict] = (record["data"], {})  # the record's data, and an empty one when it cannot fit
    for data in shapes:
        event = {
            "time": time_marker,
            **{k: record[k] for k in ("application_name", "environment_name", "log_event")},
            "trace_id": trace_marker,
            **{k: record[k] for k in ("file_path", "host_ip")},
            "data": {
                **data,
                "message": "\x01PAD\x01",
                BOOKKEEPING_KEY: {"run": run_id, "src": source, "chk": "\x01CHK\x01", "seq": 0},
            },
        }
        encoded = orjson.dumps(event)
        head, rest = encoded.split(orjson.dumps(time_marker)[1:-1], 1)
        after_time, rest = rest.split(orjson.dumps(trace_marker)[1:-1], 1)
        after_trace, rest = rest.split(b"\\u0001PAD\\u0001", 1)
        before_check, rest = rest.split(b"\\u0001CHK\\u0001", 1)
        after_check, tail = rest.rsplit(b"0", 1)
        fixed = len(head) + TIME_FORMAT_LENGTH + len(after_time) + 36 + len(after_trace)
        fixed += len(before_check) + CHECK_LENGTH + len(after_check) + 1 + len(tail) + 1  # 1 seq digit, newline
        pad_length = size - fixed
        if pad_length >= MAX_SEQ_DIGITS:
            fields = "|".join(record[k] for k in CHECKED_FIELDS)
            return Template(
                head,
                after_time,
                after_trace,
                _padding(seed, pad_length, variant),
                before_check,
                after_check,
                tail + b"\n",
                fields,
            )
    raise ValueError(f"an event line of {size} bytes is too small: this one needs {fixed + MAX_SEQ_DIGITS}")


class EventFactory:
    """Makes encoded lines of one source (emitter), seq 1, 2, 3..., each within the size range, reproducibly."""

    def __init__(self, size: SizeRange, *, seed: int, run_id: str, source: str) -> None:
        if not 0 < len(run_id) <= MAX_RUN_ID_LENGTH or not 0 < len(source) <= MAX_SOURCE_LENGTH:
            raise ValueError(
                f"run id {run_id!r} and source {source!r} must have 1..{MAX_RUN_ID_LENGTH} and "
                f"1..{MAX_SOURCE_LENGTH} characters; shorten them"
            )
        self.size = size
        self.run_id = run_id
        self.source = source
        self.seq = 0
        self._rng = random.Random(f"{seed}:{source}")
        # Trace ids have a generator of their own, so that lines(n) and n calls of line() give the same lines.
        self._trace_rng = random.Random(f"{seed}:{source}:trace")
        pool = record_pool(seed)
        average = (size.low + size.high) // 2
        count = max(1, min(MAX_TEMPLATES, TEMPLATE_MEMORY_BUDGET // max(average, 1)))
        self._templates = [
            build_template(
                self._rng.choice(pool),
                self._rng.randint(size.low, size.high),
                run_id,
                source,
                seed,
                self._rng.randrange(1 << 16),
            )
            for _ in range(count)
        ]
        self._parts: list[dict[int, tuple[bytes, bytes]]] = [{} for _ in self._templates]
        self._second = -1
        self._second_text = b""

    def _time(self) -> bytes:
        """Now as RFC 3339 with microseconds and offset; the formatted second is cached."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06d+00:00" % (self._second_text, int((now - second) * 1_000_000))

    def _trace_ids(self, count: int) -> list[bytes]:
        """count random version-4 UUIDs from the seeded generator, drawn in one call (about 3x cheaper per id).

        getrandbits(128 * n) is n draws of 128 bits, the first one in the lowest bits: reading the hex digits
        from the end keeps the ids the same however the lines are grouped.
        """
        digits = b"%0*x" % (32 * count, self._trace_rng.getrandbits(128 * count))
        return [
            b"%s-%s-4%s-%s%s-%s" % (h[:8], h[8:12], h[13:16], _UUID_VARIANT[h[16]], h[17:20], h[20:])
            for h in (digits[k - 32 : k] for k in range(32 * count, 0, -32))
        ]

    def line(self) -> bytes:
        """The next event as one encoded line, newline included."""
        return self.lines(1)[0]

    def lines(self, count: int) -> list[bytes]:
        """The next count lines, each stamped with the time it was made."""
        templates, parts_by_template = self._templates, self._parts
        out = []
        for trace in self._trace_ids(count):
            self.seq += 1
            index = self._rng.randrange(len(templates))
            t = templates[index]
            seq = b"%d" % self.seq
            parts = parts_by_template[index].get(len(seq))
            if parts is None:  # once per template and seq width: the md5 is not paid per line
                parts = parts_by_template[index][len(seq)] = (
                    t.padding_for(len(seq)) + t.before_check,
                    b"-" + t.content_sum(len(seq)) + t.after_check,
                )
            out.append(
                b"".join(
                    (
                        t.head,
                        self._time(),
                        t.after_time,
                        trace,
                        t.after_trace,
                        parts[0],
                        trace[:CHECK_HEX],
                        parts[1],
                        seq,
                        t.tail,
                    )
                )
            )
        return out
