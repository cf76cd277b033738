"""Framing lines into writes: whole lines only, at most PIPE_BUF per write unless one line is larger."""

from __future__ import annotations

import itertools
import random

import pytest

from reference.fifo import PIPE_BUF
from reference.framing import PACK_TO_PIPE_BUF, frames


def make_line(n: int, length: int) -> bytes:
    """A line of exactly length bytes, newline included, that names its number n."""
    head = b"%d:" % n
    return head + b"x" * (length - len(head) - 1) + b"\n"


def lines_of(lengths: list[int]) -> list[bytes]:
    """One distinct line per length."""
    return [make_line(n, length) for n, length in enumerate(lengths)]


class TestPacking:
    def test_packs_up_to_pipe_buf(self):
        """Whole lines are packed while the write stays within PIPE_BUF."""
        lines = lines_of([100] * 100)
        batches = list(frames(lines))
        assert [len(b) for b in batches] == [40, 40, 20]
        assert [sum(map(len, b)) for b in batches] == [4000, 4000, 2000]

    def test_exactly_pipe_buf_is_one_write(self):
        """Lines adding up to exactly PIPE_BUF travel in one write."""
        lines = lines_of([1024] * 4)
        assert list(frames(lines)) == [lines]

    def test_one_byte_over_starts_a_new_write(self):
        """A line that would take the write one byte past PIPE_BUF starts the next write."""
        lines = lines_of([1024, 1024, 1024, 1025])
        assert list(frames(lines)) == [lines[:3], lines[3:]]

    def test_each_write_is_full(self):
        """Every write but the last has no room for the line that follows it."""
        rng = random.Random(7)
        lines = lines_of([rng.randint(350, 2048) for _ in range(2000)])
        batches = list(frames(lines))
        for batch, following in itertools.pairwise(batches):
            size = sum(map(len, batch))
            assert size <= PIPE_BUF
            assert size + len(following[0]) > PIPE_BUF
        assert sum(map(len, batches[-1])) <= PIPE_BUF

    def test_pipe_buf_lines_go_one_per_write(self):
        """Lines of exactly PIPE_BUF bytes go one per write."""
        lines = lines_of([PIPE_BUF] * 5)
        assert list(frames(lines)) == [[line] for line in lines]

    def test_custom_limit(self):
        """The limit argument replaces PIPE_BUF."""
        lines = lines_of([100] * 10)
        assert [len(b) for b in frames(lines, limit=300)] == [3, 3, 3, 1]

    def test_empty_input(self):
        """No lines make no writes."""
        assert list(frames([])) == []

    def test_accepts_a_generator(self):
        """Lines may come from a one-shot iterator."""
        lines = lines_of([1000] * 9)
        assert [len(b) for b in frames(iter(lines))] == [4, 4, 1]


class TestLargeLines:
    @pytest.mark.parametrize(
        ("lengths", "expected"),
        [
            ([100, PIPE_BUF + 1, 100], [[0], [1], [2]]),
            ([PIPE_BUF + 1, 100, 100], [[0], [1, 2]]),
            ([100, 100, 70_000], [[0, 1], [2]]),
            ([70_000, 70_000], [[0], [1]]),
        ],
    )
    def test_larger_than_limit_travels_alone(self, lengths, expected):
        """A line larger than PIPE_BUF is a write of its own, with the lines around it in other writes."""
        lines = lines_of(lengths)
        assert list(frames(lines)) == [[lines[k] for k in group] for group in expected]


class TestLinesPerWrite:
    @pytest.mark.parametrize(("n", "sizes"), [(1, [1] * 10), (3, [3, 3, 3, 1]), (5, [5, 5]), (20, [10])])
    def test_n_lines_per_write(self, n, sizes):
        """lines_per_write=N puts N lines in each write, the remainder in the last."""
        lines = lines_of([500] * 10)
        batches = list(frames(lines, lines_per_write=n))
        assert [len(b) for b in batches] == sizes
        assert [line for b in batches for line in b] == lines

    def test_n_lines_whatever_their_size(self):
        """With lines_per_write=N a write may exceed PIPE_BUF: the count wins over the limit."""
        lines = lines_of([3000] * 4)
        batches = list(frames(lines, lines_per_write=2))
        assert batches == [lines[:2], lines[2:]]
        assert sum(map(len, batches[0])) == 6000

    def test_zero_means_pack(self):
        """PACK_TO_PIPE_BUF (0) is the default packing."""
        lines = lines_of([100] * 100)
        assert list(frames(lines, lines_per_write=PACK_TO_PIPE_BUF)) == list(frames(lines))


class TestIntegrity:
    @pytest.mark.parametrize("lines_per_write", [0, 1, 7])
    def test_keeps_order_and_loses_nothing(self, lines_per_write):
        """The writes, joined, are the lines in their order, each whole and each once."""
        rng = random.Random(lines_per_write)
        lines = lines_of([rng.choice([350, 400, 1500, 4096, 5000, 70_000]) for _ in range(3000)])
        batches = list(frames(lines, lines_per_write))
        flat = [line for b in batches for line in b]
        assert flat == lines
        assert all(b for b in batches)
        assert b"".join(b"".join(b) for b in batches) == b"".join(lines)

    def test_never_splits_a_line(self):
        """Every item of every write is one of the input lines, unchanged."""
        rng = random.Random(1)
        lines = lines_of([rng.randint(350, 9000) for _ in range(500)])
        given = set(lines)
        for batch in frames(lines):
            for line in batch:
                assert line in given
                assert line.endswith(b"\n")
                assert line.count(b"\n") == 1
