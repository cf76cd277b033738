"""A second benchmark data set, built without the project's event factory: other field shapes, 250-350-byte lines."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from loadtests.bench.baselines import measure_copy
from loadtests.bench.collector import run_collector
from loadtests.bench.dataset import PARSE_SAMPLE_LINES, Bench, BenchError, parse_cpu
from reference.collector.validate import parse_line

# Lines of 250-350 bytes, newline included: the small lines of services that log one short event per request,
# smaller than the emitter's 380-480 (where the Python side, not PostgreSQL, was the limit).
LINE_LOW, LINE_HIGH = 250, 350
# Times start here and grow by 1-999 us per line: strictly increasing, like one busy writer's clock.
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
# Draws of a data shape before a line too short for any falls back to null data.
SHAPE_TRIES = 8

_SERVICES = ("checkout-api", "inventory", "auth-gw", "search", "billing-worker", "media-resizer")
_ENVIRONMENTS = ("prod-eu-1", "prod-us-2", "staging", "canary")
_EVENTS = ("http.request", "db.query", "cache.miss", "job.done", "auth.denied", "queue.publish")
_FILES = (
    "src/handlers/orders.go",
    "app/models/cart.rb",
    "lib/search/query.ex",
    "worker/tasks.py",
    "internal/auth/jwt.go",
    "services/billing/invoice.ts",
)
_METHODS = ("GET", "POST", "PUT", "DELETE")
_WORDS = ("alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima", "oscar", "sierra", "tango", "zulu")


def _host(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
    return f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _data(rng: random.Random, event: str) -> dict | None:
    """One of several shapes of data object, or null: nested objects, arrays, floats, booleans, big integers."""
    shape = rng.randrange(6)
    if shape == 0:
        return None
    if shape == 1:
        return {
            "method": rng.choice(_METHODS),
            "route": f"/v2/{rng.choice(_WORDS)}/{rng.randrange(10**6)}",
            "status": rng.choice((200, 201, 204, 404, 500)),
            "ms": round(rng.uniform(0.1, 900.0), 3),
        }
    if shape == 2:
        return {
            "rows": rng.randrange(10_000),
            "ms": rng.randrange(1, 5000) / 8,
            "cached": rng.random() < 0.5,
            "sql": f"SELECT * FROM {rng.choice(_WORDS)} WHERE id = $1",  # noqa: S608 - log text, never run
        }
    if shape == 3:
        return {
            "user": {"id": rng.getrandbits(70), "tier": rng.choice(("free", "pro", "team"))},
            "tags": rng.sample(_WORDS, rng.randrange(1, 4)),
        }
    if shape == 4:
        return {"job": event, "attempt": rng.randrange(1, 6), "took_s": rng.expovariate(3.0), "ok": True}
    return {"k": rng.choice(_WORDS), "v": [rng.randrange(100) for _ in range(rng.randrange(1, 6))], "n": None}


def independent_lines(count: int, seed: int = 0) -> list[bytes]:
    """count lines (newline included) of 250-350 bytes, seeded, with strictly increasing times."""
    rng = random.Random(seed)
    when = START
    out = []
    for _ in range(count):
        when += timedelta(microseconds=rng.randrange(1, 1000))
        event = rng.choice(_EVENTS)
        record: dict[str, Any] = {
            "time": when.isoformat().replace("+00:00", "Z"),
            "application_name": rng.choice(_SERVICES),
            "environment_name": rng.choice(_ENVIRONMENTS),
            "log_event": event,
            "trace_id": f"{rng.getrandbits(128):032x}",
            "file_path": f"{rng.choice(_FILES)}:{rng.randrange(1, 900)}",
            "host_ip": _host(rng),
            "data": None,
        }
        shortest = len(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        # The newline makes the line one longer; null data must leave room for {"msg":""} (6 bytes more).
        target = rng.randrange(max(LINE_LOW - 1, shortest + 6), LINE_HIGH)
        for _ in range(SHAPE_TRIES):  # a shape too long for this length: draw another
            record["data"] = _data(rng, event)
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            if len(line) <= target:
                break
        else:
            record["data"] = None
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        if len(line) < target:  # pad data (or a null one) with a message field to the drawn length
            padded = dict(record["data"] or {}, msg="")
            room = target - len(json.dumps({**record, "data": padded}, separators=(",", ":"), ensure_ascii=False))
            if room < 0:  # no room for the field in this shape: a data object of the message alone
                padded = {"msg": ""}
                room = target - len(json.dumps({**record, "data": padded}, separators=(",", ":"), ensure_ascii=False))
            if room >= 0:
                padded["msg"] = " ".join(rng.choices(_WORDS, k=60))[:room]
                record["data"] = padded
                line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        out.append(line.encode() + b"\n")
    return out


def measure_independent(bench: Bench) -> None:
    """COPY limit, reference collector and parse_line on the independent data set (as many lines as the main one)."""
    data = independent_lines(bench.lines, bench.seed)
    rows = [row for line in data if (row := parse_line(line[:-1])[0]) is not None]
    if len(rows) != len(data):
        raise BenchError("the independent data set has lines parse_line rejects")
    other = dataclasses.replace(bench, data=data, rows=rows, metrics={}, details={}, errors={})
    per_line, per_read = parse_cpu([line[:-1] for line in data[:PARSE_SAMPLE_LINES]])
    measure_copy(other)
    result = run_collector(other, "independent")
    bench.metrics.update(
        {
            "ind_parse_us_per_line": per_line,
            "ind_parse_lines_us_per_line": per_read,
            "ind_copy_rows_per_s": other.metrics["copy_rows_per_s"],
            "ind_collector_rows_per_s": result["rows_per_s"],
            "ind_collector_cpu_us_per_row": result["cpu_us_per_row"],
            "ind_collector_main_cpu_us_per_row": result["main_thread_cpu_us_per_row"],
        }
    )
    bench.details["independent"] = {
        "lines": len(data),
        "bytes": sum(map(len, data)),
        "line_bytes": [min(map(len, data)), max(map(len, data))],
        "copy": other.details["copy"],
        "collector": result,
    }
