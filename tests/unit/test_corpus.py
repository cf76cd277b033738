"""The hostile-input corpus in scenarios/corpus/ and its loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest

from loadtests.corpus import CORPUS_DIR, MANIFEST, BadLine, CorpusError, load_corpus, select
from reference.collector.validate import parse_line
from reference.sizes import MAX_LINE_BYTES

# The kinds issue 4 names, by their corpus names.
REQUIRED_KINDS = (
    "invalid-utf8",
    "nul-byte",
    "escaped-nul-text",
    "escaped-nul-data",
    "truncated-json",
    "json-array",
    "json-number",
    "json-string",
    *(
        f"missing-{f}"
        for f in (
            "time",
            "application_name",
            "environment_name",
            "log_event",
            "trace_id",
            "file_path",
            "host_ip",
            "data",
        )
    ),
    "empty-string",
    "wrong-type-number",
    "time-without-offset",
    "impossible-date",
    "year-10000",
    "data-list",
    "deep-nesting",
    "over-limit",
    "crlf",
    "blank",
    "bom",
    "nan",
    "infinity",
    "duplicate-key",
    "fragment",
    "pg-rejected-number",
)


@pytest.fixture(scope="module")
def corpus() -> list[BadLine]:
    return load_corpus()


@pytest.fixture
def broken(tmp_path: Path):
    """A copy of the manifest and a small file in tmp_path; edit(entries) rewrites the manifest's kinds."""
    (tmp_path / "a.bin").write_bytes(b"[1]")

    def edit(kinds: object, raw: str | None = None) -> Path:
        text = raw if raw is not None else json.dumps({"kinds": kinds})
        (tmp_path / MANIFEST).write_text(text)
        return tmp_path

    return edit


GOOD_ENTRY = {"kind": "a", "file": "a.bin", "description": "an array", "reason": "got a JSON array"}


class TestCorpus:
    def test_it_holds_at_least_twenty_kinds_including_every_kind_the_issue_names(self, corpus):
        """The corpus has 20 kinds or more, among them each kind issue 4 lists."""
        kinds = [line.kind for line in corpus]
        assert len(kinds) >= 20
        assert len(set(kinds)) == len(kinds)
        assert set(REQUIRED_KINDS) <= set(kinds), sorted(set(REQUIRED_KINDS) - set(kinds))

    def test_every_file_the_manifest_names_exists(self):
        """Each kind has its file in scenarios/corpus/ (or a recipe), and no file lies there unlisted."""
        manifest = json.loads((CORPUS_DIR / MANIFEST).read_text())
        files = {entry["file"] for entry in manifest["kinds"] if "file" in entry}
        assert all((CORPUS_DIR / name).is_file() for name in files)
        assert all("file" in entry or "recipe" in entry for entry in manifest["kinds"])
        assert {p.name for p in CORPUS_DIR.iterdir()} == files | {MANIFEST}

    def test_each_line_is_one_line_without_its_newline(self, corpus):
        """No raw line holds a newline: the harness adds it (or, for a fragment, glues the next line on)."""
        assert all(b"\n" not in line.raw for line in corpus)

    def test_each_kind_has_a_reason_and_a_description(self, corpus):
        """The reason the collector must give and a one-line description are never empty."""
        for line in corpus:
            assert line.reason.strip(), line.kind
            assert line.description.strip(), line.kind
            assert "\n" not in line.description, line.kind

    def test_the_over_limit_line_is_made_from_its_recipe_above_the_default_limit(self, corpus):
        """The 2 MiB line is generated, exceeds the collector's default --max-line-bytes and says so in needs."""
        line = next(line for line in corpus if line.kind == "over-limit")
        assert line.raw == b"x" * 2 * 1024 * 1024
        assert len(line.raw) > MAX_LINE_BYTES
        assert "--max-line-bytes" in line.needs

    def test_only_the_fragment_is_glued_and_it_is_a_cut_event(self, corpus):
        """The fragment is the start of an event that does not parse alone; no other kind is glued."""
        assert [line.kind for line in corpus if line.glue] == ["fragment"]
        fragment = next(line for line in corpus if line.glue).raw
        assert fragment.startswith(b'{"time":')
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(fragment)

    def test_the_blank_line_is_empty(self, corpus):
        """The blank kind is an empty line: only the newline the harness adds."""
        assert next(line for line in corpus if line.kind == "blank").raw == b""

    def test_select_picks_kinds_in_corpus_order(self, corpus):
        """select() keeps the named kinds in corpus order; "" keeps them all."""
        assert [line.kind for line in select(corpus, " bom, blank ")] == ["blank", "bom"]
        assert select(corpus, "") == corpus

    def test_select_names_an_unknown_kind(self, corpus):
        """An unknown kind is refused with the kinds that exist."""
        with pytest.raises(ValueError, match=r"unknown kind\(s\) nope; the corpus has invalid-utf8"):
            select(corpus, "blank,nope")


class TestCorpusThroughParseLine:
    """Every corpus kind judged by parse_line alone (no database): the reason the manifest promises, or a row."""

    # Kinds parse_line cannot decide alone: the splitter rejects an over-limit line, a fragment is judged glued
    # to the next line, and PostgreSQL itself refuses the pg-rejected row (its number is beyond numeric's range).
    ELSEWHERE = ("over-limit", "fragment", "pg-rejected-number")

    def test_every_kind_is_rejected_with_its_reason(self, corpus):
        """Each kind but those decided elsewhere gives no row and one rejection whose reason holds the manifest's."""
        for line in corpus:
            if line.kind in self.ELSEWHERE:
                continue
            row, rejections = parse_line(line.raw)
            assert row is None, line.kind
            assert [r.raw for r in rejections] == [line.raw], line.kind
            assert line.reason in rejections[0].reason, (line.kind, rejections[0].reason)

    def test_the_fragment_is_cut_off_the_next_line(self, corpus):
        """The fragment glued before a good line is rejected as a fragment; the good line's row comes out."""
        fragment = next(line for line in corpus if line.kind == "fragment")
        good = orjson.dumps(
            {
                "time": "2026-11-28T05:30:00Z",
                "application_name": "a",
                "environment_name": "e",
                "log_event": "l",
                "trace_id": "t",
                "file_path": "f",
                "host_ip": "h",
                "data": None,
            }
        )
        row, rejections = parse_line(fragment.raw + good)
        assert row == parse_line(good)[0]
        assert [(r.raw, fragment.reason in r.reason) for r in rejections] == [(fragment.raw, True)]

    def test_the_pg_rejected_kind_passes_the_collector(self, corpus):
        """The kind PostgreSQL refuses is a row for the collector, its number passed on as written."""
        line = next(line for line in corpus if line.kind == "pg-rejected-number")
        row, rejections = parse_line(line.raw)
        assert rejections == []
        assert b"1e200000" in row


class TestBrokenManifest:
    def test_a_good_small_manifest_loads(self, broken):
        """The fixture's manifest itself is fine."""
        assert load_corpus(broken([GOOD_ENTRY])) == [BadLine("a", b"[1]", "got a JSON array", "an array")]

    def test_a_missing_manifest_names_its_path(self, tmp_path):
        """No manifest: the error gives the path and how to get it back."""
        with pytest.raises(CorpusError, match=r"manifest\.json: no corpus manifest here; restore it"):
            load_corpus(tmp_path)

    def test_invalid_json_says_where(self, broken):
        """A syntax error in the manifest gives the path and the place."""
        with pytest.raises(CorpusError, match=r"manifest\.json: not valid JSON \(.*line 1.*\); fix the syntax"):
            load_corpus(broken(None, raw='{"kinds": [}'))

    @pytest.mark.parametrize(
        ("kinds", "message"),
        [
            ([], r'non-empty list "kinds"'),
            ([{**GOOD_ENTRY, "file": "gone.bin"}], r"kind #1 \(a\): file .*gone\.bin does not exist; add it"),
            ([{**GOOD_ENTRY, "file": "../a.bin"}], r'"file" must be a plain file name'),
            ([{**GOOD_ENTRY, "recipe": {"repeat": "x", "bytes": 3}}], r'exactly one of "file"'),
            ([{k: v for k, v in GOOD_ENTRY.items() if k != "file"}], r'exactly one of "file"'),
            ([{**GOOD_ENTRY, "reason": " "}], r'kind #1 \(a\): "reason" must be a non-empty string'),
            ([{**GOOD_ENTRY, "description": None}], r'"description" must be a non-empty string'),
            ([{**GOOD_ENTRY, "kind": ""}], r'kind #1: "kind" must be a non-empty string'),
            ([GOOD_ENTRY, GOOD_ENTRY], r"kind #2 'a' appears twice; give each kind its own name"),
            ([{**GOOD_ENTRY, "reasn": "x"}], r"unknown field\(s\) reasn; the fields are"),
            ([{**GOOD_ENTRY, "glue": "yes"}], r'"glue" must be true or false'),
            (
                [{"kind": "r", "recipe": {"repeat": "", "bytes": 3}, "description": "d", "reason": "r"}],
                r'"recipe" needs a non-empty "repeat"',
            ),
            (
                [{"kind": "r", "recipe": {"bytes": 3}, "description": "d", "reason": "r"}],
                r'"recipe" must be \{"repeat": TEXT, "bytes": N\}',
            ),
            (
                [{"kind": "r", "recipe": {"repeat": "x\n", "bytes": 3}, "description": "d", "reason": "r"}],
                r"holds a newline at byte 1; store one line without its newline",
            ),
            (["a"], r"kind #1: expected an object"),
        ],
    )
    def test_a_broken_entry_is_named_with_what_to_fix(self, broken, kinds, message):
        """Each way an entry can be wrong gives the manifest's path, the entry and how to fix it."""
        folder = broken(kinds)
        with pytest.raises(CorpusError, match=message) as caught:
            load_corpus(folder)
        assert str(folder / MANIFEST) in str(caught.value)

    def test_a_file_with_a_newline_is_refused(self, broken, tmp_path):
        """A stored line must be one line: a newline inside is reported with its offset."""
        (tmp_path / "a.bin").write_bytes(b"[1]\n[2]")
        with pytest.raises(CorpusError, match=r"holds a newline at byte 3"):
            load_corpus(broken([GOOD_ENTRY]))

    def test_the_real_manifest_copied_elsewhere_loads_the_same(self, tmp_path, corpus):
        """The loader reads the folder it is given, not a fixed path."""
        copy = tmp_path / "corpus"
        shutil.copytree(CORPUS_DIR, copy)
        assert load_corpus(copy) == corpus
