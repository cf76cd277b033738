"""The collector's line splitter: whole lines from arbitrary chunks, over-long lines bounded in memory."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.collector.lines import REJECTED_PREFIX_BYTES, LineSplitter, Oversized

LIMIT = 1000


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> tuple[list[bytes], list[Oversized]]:
    """Feed every chunk and collect everything the splitter returns, in order."""
    lines: list[bytes] = []
    oversized: list[Oversized] = []
    for chunk in chunks:
        got, big = splitter.feed(chunk)
        lines += got
        oversized += big
    return lines, oversized


def cut(data: bytes, positions: list[int]) -> list[bytes]:
    """data cut at the given offsets."""
    bounds = [0, *sorted(positions), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class TestWholeLines:
    def test_one_chunk(self):
        """Lines complete in one chunk come out without their newlines, in order."""
        lines, oversized = LineSplitter(LIMIT).feed(b"one\ntwo\nthree\n")
        assert lines == [b"one", b"two", b"three"]
        assert oversized == []

    def test_split_across_two_chunks(self):
        """A line split across two chunks comes out whole."""
        splitter = LineSplitter(LIMIT)
        assert splitter.feed(b"one\ntw") == ([b"one"], [])
        assert splitter.feed(b"o\nthree\n") == ([b"two", b"three"], [])

    def test_newline_first_byte_of_chunk(self):
        """A chunk that starts with the newline finishes the line held back."""
        splitter = LineSplitter(LIMIT)
        assert splitter.feed(b"abc") == ([], [])
        assert splitter.feed(b"\ndef\n") == ([b"abc", b"def"], [])

    def test_newline_last_byte_of_chunk(self):
        """A chunk that ends with a newline leaves nothing pending."""
        splitter = LineSplitter(LIMIT)
        assert splitter.feed(b"ab") == ([], [])
        assert splitter.feed(b"c\n") == ([b"abc"], [])
        assert splitter.pending == 0
        assert splitter.feed(b"def\n") == ([b"def"], [])

    def test_line_over_many_chunks(self):
        """A line spread over several chunks comes out once, whole."""
        splitter = LineSplitter(LIMIT)
        for piece in (b'{"a":', b"1,", b'"b":', b"2}"):
            assert splitter.feed(piece) == ([], [])
        assert splitter.pending == len(b'{"a":1,"b":2}')
        assert splitter.feed(b"\n") == ([b'{"a":1,"b":2}'], [])

    def test_byte_at_a_time(self):
        """Feeding one byte at a time gives the same lines as one big chunk."""
        data = b"".join(b"line %d %s\n" % (n, b"y" * (n % 37)) for n in range(300))
        lines, oversized = feed_all(LineSplitter(LIMIT), [data[k : k + 1] for k in range(len(data))])
        assert lines == data.split(b"\n")[:-1]
        assert oversized == []

    @pytest.mark.parametrize("seed", range(5))
    def test_random_chunking(self, seed):
        """Whatever the chunk boundaries, the lines come out whole and in order."""
        rng = random.Random(seed)
        expected = [b"%d:" % n + b"z" * rng.randint(0, 300) for n in range(2000)]
        data = b"\n".join(expected) + b"\n"
        chunks = cut(data, rng.sample(range(1, len(data)), 400))
        lines, oversized = feed_all(LineSplitter(LIMIT), chunks)
        assert lines == expected
        assert oversized == []

    def test_empty_lines_and_chunks(self):
        """Empty lines come out as empty bytes; empty chunks change nothing."""
        lines, _ = feed_all(LineSplitter(LIMIT), [b"", b"\n\n", b"", b"a\n"])
        assert lines == [b"", b"", b"a"]

    def test_line_at_the_limit_is_not_oversized(self):
        """A line of exactly max_line_bytes is an ordinary line, also when it arrives in pieces."""
        line = b"q" * LIMIT
        lines, oversized = feed_all(LineSplitter(LIMIT), [line[:400], line[400:], b"\n"])
        assert lines == [line]
        assert oversized == []


class TestOversized:
    def test_complete_in_one_chunk(self):
        """An over-long line inside one chunk comes out as Oversized; the line after it is intact."""
        big = b"x" * (LIMIT + 1)
        lines, oversized = LineSplitter(LIMIT).feed(b"before\n" + big + b"\nafter\n")
        assert lines == [b"before", b"after"]
        assert oversized == [Oversized(LIMIT + 1, big, complete=True)]

    def test_prefix_is_bounded(self):
        """An over-long line keeps only its first REJECTED_PREFIX_BYTES bytes."""
        big = random.Random(3).randbytes(200_000).replace(b"\n", b"_")
        lines, oversized = LineSplitter(LIMIT).feed(big + b"\nnext\n")
        assert lines == [b"next"]
        assert len(oversized) == 1
        assert oversized[0].length == len(big)
        assert oversized[0].prefix == big[:REJECTED_PREFIX_BYTES]
        assert oversized[0].complete

    def test_spread_across_chunks(self):
        """An over-long line without a newline for many chunks comes out once, with its full length."""
        splitter = LineSplitter(LIMIT)
        chunks = [bytes([65 + k]) * 50_000 for k in range(10)]
        lines, oversized = feed_all(splitter, [b"first\n", *chunks])
        assert lines == [b"first"]
        assert oversized == []
        assert splitter.pending == 500_000
        lines, oversized = feed_all(splitter, [b"tail\nnext line\n"])
        assert lines == [b"next line"]
        assert len(oversized) == 1
        assert oversized[0].length == 500_000 + len(b"tail")
        # The first REJECTED_PREFIX_BYTES bytes are kept, whatever the chunk boundaries were.
        assert oversized[0].prefix == b"".join(chunks)[:REJECTED_PREFIX_BYTES]
        assert oversized[0].complete
        assert splitter.pending == 0

    def test_grows_past_the_limit_from_the_tail(self):
        """A line held back under the limit that grows past it becomes Oversized with all its bytes counted."""
        splitter = LineSplitter(LIMIT)
        lines, oversized = feed_all(splitter, [b"a" * 800, b"a" * 800, b"a" * 5, b"\nok\n"])
        assert lines == [b"ok"]
        assert [(o.length, o.complete) for o in oversized] == [(1605, True)]
        assert oversized[0].prefix == b"a" * 1605
        assert len(oversized[0].prefix) <= REJECTED_PREFIX_BYTES

    def test_newline_first_byte_after_oversized(self):
        """A newline as the first byte of the next chunk ends the over-long line, and the next line is intact."""
        splitter = LineSplitter(LIMIT)
        lines, oversized = feed_all(splitter, [b"b" * 3000, b"\nnext\n"])
        assert lines == [b"next"]
        assert [(o.length, o.complete) for o in oversized] == [(3000, True)]

    def test_oversized_byte_at_a_time(self):
        """An over-long line fed byte by byte is still one Oversized, followed by intact lines."""
        data = b"ok1\n" + b"c" * (LIMIT + 50) + b"\nok2\n"
        lines, oversized = feed_all(LineSplitter(LIMIT), [data[k : k + 1] for k in range(len(data))])
        assert lines == [b"ok1", b"ok2"]
        assert [(o.length, o.complete) for o in oversized] == [(LIMIT + 50, True)]
        assert oversized[0].prefix == b"c" * (LIMIT + 50)

    def test_several_oversized_in_one_chunk(self):
        """Several over-long lines in one chunk each come out, in order, between intact lines."""
        data = b"A" * 1500 + b"\nmid\n" + b"B" * 2500 + b"\nend\n"
        lines, oversized = LineSplitter(LIMIT).feed(data)
        assert lines == [b"mid", b"end"]
        assert [(o.length, o.prefix[:1]) for o in oversized] == [(1500, b"A"), (2500, b"B")]

    def test_memory_stays_bounded(self):
        """An endless line without a newline does not grow the splitter's buffer."""
        splitter = LineSplitter(LIMIT)
        for _ in range(200):
            splitter.feed(b"m" * 65_536)
            assert len(splitter._tail) <= LIMIT
            assert splitter._oversized is None or len(splitter._oversized.prefix) <= REJECTED_PREFIX_BYTES
        assert splitter.pending == 200 * 65_536
        assert len(splitter._tail) == 0


GOOD_LINE = (
    b'{"time":"2026-11-28T05:30:00Z","application_name":"A","environment_name":"e","log_event":"l",'
    b'"trace_id":"t","file_path":"/f","host_ip":"10.0.0.1","data":{"k":{"n":1}}}'
)


class TestLineGluedBehindAnOversizedOne:
    """A good line glued at the end of an over-limit fragment still comes out (it used to vanish with it)."""

    @pytest.mark.parametrize("garbage", [b"x", b'{"time":"2026-11-28T0', b'{"a":{"b":[1,'])
    @pytest.mark.parametrize("chunk", [7, 999, 1000, 1001, 4096, 10**9])
    def test_good_line_after_an_over_limit_fragment(self, garbage, chunk):
        """5x the limit without a newline, then a good line: the fragment is Oversized, the line is emitted whole."""
        fragment = (garbage * (5 * LIMIT // len(garbage) + 1))[: 5 * LIMIT]
        data = b"before\n" + fragment + GOOD_LINE + b"\nafter\n"
        lines, oversized = feed_all(LineSplitter(LIMIT), cut(data, list(range(chunk, len(data), chunk))))
        assert lines[0] == b"before"
        assert lines[-1] == b"after"
        assert len(oversized) == 1
        assert oversized[0].length == len(fragment) + len(GOOD_LINE)
        assert oversized[0].complete
        # The good line comes out alone; the prefix kept for the rejection stops before it.
        assert lines[1] == GOOD_LINE
        assert (fragment + GOOD_LINE).startswith(oversized[0].prefix)
        assert len(oversized[0].prefix) <= len(fragment)

    @pytest.mark.parametrize("end", [b"x", b'{"a":1}', GOOD_LINE[:-1], b'{"data":{"k":1}}'])
    def test_no_valid_event_at_the_end(self, end):
        """An over-long line that does not end with a whole valid event is one Oversized, nothing more."""
        big = b"x" * 3 * LIMIT + end
        lines, oversized = LineSplitter(LIMIT).feed(big + b"\nok\n")
        assert lines == [b"ok"]
        assert [(o.length, o.prefix) for o in oversized] == [(len(big), big)]

    def test_an_over_long_event_is_one_rejection(self):
        """A whole event over the limit (its own nested objects do not count as glued lines) is one Oversized."""
        big = GOOD_LINE.replace(b'"A"', b'"' + b"A" * 2 * LIMIT + b'"').replace(b'{"n":1}', b'{"time":1}')
        lines, oversized = LineSplitter(LIMIT).feed(big + b"\n")
        assert (lines, [o.length for o in oversized]) == ([], [len(big)])

    def test_window_memory_is_bounded(self):
        """While skipping, the splitter holds at most the limit of the over-long line's end."""
        splitter = LineSplitter(LIMIT)
        for _ in range(100):
            splitter.feed(b'{"' * 5000)
            assert len(splitter._window) <= LIMIT


class TestTakePartial:
    def test_unfinished_tail(self):
        """take_partial hands over the bytes after the last newline, once."""
        splitter = LineSplitter(LIMIT)
        splitter.feed(b"done\nhalf a li")
        splitter.feed(b"ne")
        assert splitter.take_partial() == b"half a line"
        assert splitter.take_partial() is None
        assert splitter.pending == 0

    def test_nothing_pending(self):
        """take_partial returns None when every line was finished."""
        splitter = LineSplitter(LIMIT)
        splitter.feed(b"a\nb\n")
        assert splitter.take_partial() is None

    def test_unfinished_oversized(self):
        """An unfinished over-long line is handed over as an incomplete Oversized."""
        splitter = LineSplitter(LIMIT)
        feed_all(splitter, [b"r" * 700, b"r" * 700, b"r" * 700])
        partial = splitter.take_partial()
        assert isinstance(partial, Oversized)
        assert (partial.length, partial.complete) == (2100, False)
        assert partial.prefix == b"r" * 2100
        assert splitter.take_partial() is None

    def test_splitter_is_reusable_after_take_partial(self):
        """After take_partial the next chunk starts a fresh line."""
        splitter = LineSplitter(LIMIT)
        splitter.feed(b"stale")
        splitter.take_partial()
        assert splitter.feed(b"fresh\n") == ([b"fresh"], [])


def feed_mixed(
    splitter: LineSplitter, chunks: list[bytes], use_block: list[bool]
) -> tuple[list[bytes], list[Oversized]]:
    """Feed every chunk, through feed_block where asked and it takes the chunk, else through feed."""
    lines: list[bytes] = []
    oversized: list[Oversized] = []
    for chunk, block in zip(chunks, use_block, strict=True):
        whole = splitter.feed_block(chunk) if block else None
        if whole is None:
            got, big = splitter.feed(chunk)
            lines += got
            oversized += big
        else:
            joined, count = whole
            got = joined.split(b"\n") if count else []
            assert len(got) == count
            lines += got
    return lines, oversized


class TestFeedBlock:
    """feed_block hands over the same lines as feed, still joined, and declines whenever a line may be too long."""

    @given(
        st.lists(st.binary(max_size=LIMIT + 200).map(lambda b: b.replace(b"\n", b"x")), max_size=12),
        st.lists(st.integers(0, 20_000), max_size=10),
        st.lists(st.booleans(), min_size=11, max_size=11),
    )
    @settings(max_examples=300, deadline=None)
    def test_same_as_feed(self, lines: list[bytes], positions: list[int], use_block: list[bool]):
        """Any lines (some over the limit), cut anywhere, fed either way: the same lines, over-long ones and tail."""
        data = b"".join(line + b"\n" for line in lines) + b"tail"
        chunks = cut(data, [p % (len(data) + 1) for p in positions])
        plain, mixed = LineSplitter(LIMIT), LineSplitter(LIMIT)
        want = feed_all(plain, chunks)
        got = feed_mixed(mixed, chunks, use_block[: len(chunks)])
        assert got[0] == want[0]
        assert [(o.length, o.prefix, o.complete) for o in got[1]] == [(o.length, o.prefix, o.complete) for o in want[1]]
        assert mixed.pending == plain.pending
        partial_a, partial_b = mixed.take_partial(), plain.take_partial()
        assert type(partial_a) is type(partial_b)
        if isinstance(partial_a, bytes):
            assert partial_a == partial_b

    def test_declines_past_the_limit(self):
        """A chunk that with the held tail exceeds the limit, or arrives while an over-long line is skipped: None."""
        splitter = LineSplitter(LIMIT)
        assert splitter.feed_block(b"a" * 600) == (b"", 0)
        assert splitter.feed_block(b"b" * 401 + b"\n") is None
        assert splitter.feed(b"b" * 401 + b"\n")[1][0].length == 1001
        assert splitter.feed_block(b"a" * 2000) is None
        assert splitter.feed(b"a" * 2000 + b"\n")[1][0].length == 2000
        assert splitter.feed_block(b"a\nb\nc") == (b"a\nb", 2)
        assert splitter.pending == 1
